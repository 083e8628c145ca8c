//! Drawing `rally play`: each screen of an [`App`] rendered into a ratatui
//! frame. Reads the state, never changes it.

use std::time::Instant;

use rally_protocol::Seat;
use rally_protocol::control::MatchEnd;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::app::{App, GameState, LoginField, LoginPrompt, Screen};
use super::court::Cell;

impl App {
    /// Draws the current screen.
    pub fn draw(&self, frame: &mut Frame<'_>, now: Instant) {
        let [main, status] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
        match &self.screen {
            Screen::Login { username, password, field, busy } => {
                self.draw_login(frame, main, username, password, *field, *busy)
            }
            Screen::Home { chat_input, typing } => self.draw_home(frame, main, chat_input, *typing),
            Screen::Queued { against_bot } => {
                let what = if *against_bot { "a bot" } else { "an opponent" };
                let text = vec![
                    Line::from(format!("Looking for {what}…")).bold(),
                    Line::from(""),
                    Line::from("Esc leaves the queue."),
                ];
                frame.render_widget(Paragraph::new(text).block(Block::bordered().title(" rally · queue ")), main);
            }
            Screen::Game(game) => draw_game(frame, main, game, now),
            Screen::Result { end, seat, rating_before } => {
                self.draw_result(frame, main, end.as_ref(), *seat, *rating_before);
            }
        }
        frame.render_widget(Paragraph::new(self.status()).style(Style::new().fg(Color::Yellow)), status);
    }

    fn draw_login(
        &self,
        frame: &mut Frame<'_>,
        area: Rect,
        username: &str,
        password: &str,
        field: LoginField,
        busy: bool,
    ) {
        let marker = |f: LoginField| if f == field && !busy { "▶ " } else { "  " };
        let text = vec![
            Line::from("Welcome to rally.").bold(),
            Line::from(""),
            Line::from(format!("{}username: {username}", marker(LoginField::Username))),
            Line::from(format!("{}password: {}", marker(LoginField::Password), "•".repeat(password.chars().count()))),
            Line::from(""),
            Line::from("Tab switches field · Enter logs in · Ctrl-R registers a new account · Esc quits"),
            Line::from("Passwords need at least 10 characters and must not be a common one."),
        ];
        let text = match &self.login_prompt {
            None => text,
            Some(prompt) => {
                // The provider's instructions come first; URLs stand alone on a line, so a
                // terminal's link detection (and a copy) takes the whole of them.
                let mut lines = vec![Line::from("Log in at the identity provider").bold(), Line::from("")];
                match prompt {
                    LoginPrompt::Device { verification_uri, user_code, verification_uri_complete, expires_at_ms } => {
                        lines.push(Line::from(vec![
                            Span::raw(format!("Open {verification_uri} and enter ")),
                            Span::raw(user_code.clone()).bold(),
                        ]));
                        if !verification_uri_complete.is_empty() {
                            lines.push(Line::from("or open, with the code filled in:"));
                            lines.push(Line::from(verification_uri_complete.clone()));
                        }
                        let left_s = (expires_at_ms - unix_ms()).max(0) / 1000;
                        lines.push(Line::from(format!(
                            "The code expires in {} min {:02} s.",
                            left_s / 60,
                            left_s % 60
                        )));
                    }
                    LoginPrompt::Browser { url } => {
                        lines.push(Line::from("Open this in a browser and sign in:"));
                        lines.push(Line::from(url.clone()));
                        lines.push(Line::from("rally play takes the login back from the browser by itself."));
                    }
                }
                lines.push(Line::from(""));
                lines.push(Line::from("Or log in with a password:").dim());
                lines.extend(text.into_iter().skip(2));
                lines
            }
        };
        // Wrapped: an authorization URL is longer than most terminals are wide.
        let login = Paragraph::new(text).wrap(Wrap { trim: false }).block(Block::bordered().title(" rally · log in "));
        frame.render_widget(login, area);
    }

    fn draw_home(&self, frame: &mut Frame<'_>, area: Rect, chat_input: &str, typing: bool) {
        let [left, right] = Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(area);
        let mut lines = Vec::new();
        if let Some((_, name)) = &self.account {
            lines.push(Line::from(vec![Span::raw("Player: "), Span::raw(name.clone()).bold()]));
        }
        match self.profile {
            Some((rating, deviation, wins, losses)) => {
                lines.push(Line::from(format!("Rating: {rating:.0} ± {:.0}", 2.0 * deviation)));
                lines.push(Line::from(format!("Record: {wins} won, {losses} lost")));
            }
            None => lines.push(Line::from("Rating: loading…")),
        }
        if self.leaderboard.1 > 0 {
            lines.push(Line::from(format!("Rank: #{}", self.leaderboard.1)));
        }
        lines.push(Line::from(""));
        lines.push(Line::from("Leaderboard").bold());
        for (rank, name, rating) in &self.leaderboard.0 {
            let own = self.account.as_ref().is_some_and(|(_, n)| n == name);
            let line = Line::from(format!("{rank:>3}. {name:<20} {rating:>6.0}"));
            lines.push(if own { line.add_modifier(Modifier::BOLD) } else { line });
        }
        lines.push(Line::from(""));
        lines.push(Line::from("b: play a bot · h: play a human · c: chat · r: refresh · q: quit"));
        frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" rally · home ")), left);

        let [messages, input] = Layout::vertical([Constraint::Min(1), Constraint::Length(3)]).areas(right);
        let visible = usize::from(messages.height.saturating_sub(2));
        let chat: Vec<Line<'_>> = self
            .chat
            .iter()
            .skip(self.chat.len().saturating_sub(visible))
            .map(|(from, text)| {
                Line::from(vec![Span::raw(from.clone()).bold(), Span::raw(": "), Span::raw(text.clone())])
            })
            .collect();
        frame.render_widget(
            Paragraph::new(chat).wrap(Wrap { trim: false }).block(Block::bordered().title(" chat · lobby ")),
            messages,
        );
        let prompt = if typing { format!("{chat_input}▏") } else { "press c to type".to_owned() };
        frame.render_widget(Paragraph::new(prompt).block(Block::bordered()), input);
    }

    fn draw_result(
        &self,
        frame: &mut Frame<'_>,
        area: Rect,
        end: Option<&MatchEnd>,
        seat: Option<Seat>,
        rating_before: Option<f64>,
    ) {
        let mut lines = Vec::new();
        match (end, seat) {
            (Some(end), Some(seat)) => {
                let won = end.winner == Some(rally_sim::pong::geometry::side_of(seat));
                lines.push(Line::from(if won { "You won!" } else { "You lost." }).bold());
                let scores: Vec<String> = end.scores.iter().map(u32::to_string).collect();
                lines.push(Line::from(format!("Score {} ({:?})", scores.join(" : "), end.reason)));
            }
            _ => lines.push(Line::from("The match ended.").bold()),
        }
        if let (Some(before), Some(after)) = (rating_before, self.rating()) {
            lines.push(Line::from(format!("Rating {before:.0} → {after:.0} ({:+.0})", after - before)));
        }
        lines.push(Line::from(""));
        lines.push(Line::from("Any key returns to the lobby · q quits"));
        frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" rally · result ")), area);
    }
}

fn draw_game(frame: &mut Frame<'_>, area: Rect, game: &GameState, now: Instant) {
    let title = format!(" rally · {} ", game.shard);
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (Some(view), Some(layout), Some(welcome)) = (&game.view, &game.layout, &game.welcome) else {
        frame.render_widget(Paragraph::new("Connecting…"), inner);
        return;
    };
    let mut values = Vec::new();
    if !view.interpolated(now, &mut values) {
        frame.render_widget(Paragraph::new("Waiting for the first snapshot…"), inner);
        return;
    }
    let own = layout
        .paddle_index(welcome.seat)
        .and_then(|idx| view.predicted().and_then(|s| s.values.get(idx)).map(|&y| (welcome.seat, f64::from(y))));
    let court = layout.court(&values, own);
    let [score_area, field] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
    let mut header = format!("{:>3}   {:<3}", court.score[0], court.score[1]);
    match court.phase {
        0 => header.push_str("   waiting for the other players"),
        1 => header
            .push_str(&format!("   serve in {:.1} s", f64::from(court.countdown) / f64::from(welcome.tick_rate_hz))),
        _ => {}
    }
    frame.render_widget(Paragraph::new(header).centered().bold(), score_area);
    let cells = court.rasterize(field.width, field.height, Some(welcome.seat));
    let buf = frame.buffer_mut();
    for (i, cell) in cells.iter().enumerate() {
        let (col, row) = ((i % usize::from(field.width)) as u16, (i / usize::from(field.width)) as u16);
        let (symbol, style) = match cell {
            Cell::Empty => continue,
            Cell::Net => ("┆", Style::new().fg(Color::DarkGray)),
            Cell::OwnPaddle => ("█", Style::new().fg(Color::Cyan)),
            Cell::Paddle => ("█", Style::new().fg(Color::White)),
            Cell::Ball => ("●", Style::new().fg(Color::Yellow)),
        };
        if let Some(target) = buf.cell_mut((field.x + col, field.y + row)) {
            target.set_symbol(symbol).set_style(style);
        }
    }
}

/// Now, in Unix milliseconds (how the lobby gives deadlines).
fn unix_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
