-- Profile.FindPlayer looks players up by display name (the username as
-- registered), case-insensitively; usernames are ASCII, so lower() agrees
-- on both backends.
CREATE INDEX profiles_display_name_lower ON profiles (lower(display_name));
