//! The seat `rally play` holds, kept in a small file while a match runs so a
//! restarted client takes the seat back (resumes) instead of queueing again
//! and losing the old match by forfeit. The file holds the shard's resume
//! secret: it is readable by the user only (0600) and removed when the match
//! ends or the seat is refused.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rally_protocol::MatchId;
use rally_protocol::control::{ClientHello, RESUME_SECRET_LEN};
use serde::{Deserialize, Serialize};

/// A held seat and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSeat {
    /// The account holding it.
    pub player_id: u64,
    /// The match.
    pub match_id: u64,
    /// The seat.
    pub seat: u8,
    /// The welcome's resume secret, hex.
    pub secret_hex: String,
    /// The shard's name, for the screen.
    pub shard_name: String,
    /// The shard's address on the transport used (QUIC, or raw UDP).
    pub addr: std::net::SocketAddr,
    /// `quic` or `udp`.
    pub transport: String,
    /// The shard certificate's SHA-256 (hex), for QUIC.
    pub certificate_sha256: String,
}

impl HeldSeat {
    /// The hello that takes the seat back, when the secret is well formed.
    pub fn credential(&self) -> Option<ClientHello> {
        let secret: [u8; RESUME_SECRET_LEN] = hex::decode(&self.secret_hex).ok()?.try_into().ok()?;
        Some(ClientHello::Resume { match_id: MatchId(self.match_id), seat: self.seat, secret })
    }
}

/// Where held seats are kept: one file per account in a directory.
#[derive(Clone, Debug)]
pub struct SeatFile {
    dir: Option<PathBuf>,
}

impl SeatFile {
    /// Seats kept in `dir`; `None` keeps none (a restart then queues anew).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// `$XDG_STATE_HOME/rally`, else `~/.local/state/rally`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_STATE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|home| !home.is_empty())
                    .map(|home| Path::new(&home).join(".local/state"))
            })
            .map(|dir| dir.join("rally"))
    }

    fn path(&self, player_id: u64) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(format!("seat-{player_id}.json")))
    }

    /// The seat `player_id` held when the last client stopped, if any.
    pub fn load(&self, player_id: u64) -> Option<HeldSeat> {
        let path = self.path(player_id)?;
        let text = std::fs::read_to_string(&path).ok()?;
        match serde_json::from_str::<HeldSeat>(&text) {
            Ok(seat) if seat.player_id == player_id => Some(seat),
            _ => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable seat file");
                self.clear(player_id);
                None
            }
        }
    }

    /// Keeps `seat` (replacing any other of the account), readable by the user only.
    pub fn save(&self, seat: &HeldSeat) -> anyhow::Result<()> {
        let Some(path) = self.path(seat.player_id) else { return Ok(()) };
        let dir = path.parent().context("a seat file has a directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        std::io::Write::write_all(&mut file, serde_json::to_string(seat)?.as_bytes())
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(file);
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Forgets the seat of `player_id` (the match ended or the seat was refused).
    pub fn clear(&self, player_id: u64) {
        if let Some(path) = self.path(player_id) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seat_survives_in_a_file_only_its_user_reads_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let file = SeatFile::new(Some(dir.path().join("state")));
        let seat = HeldSeat {
            player_id: 7,
            match_id: 42,
            seat: 1,
            secret_hex: "ab".repeat(RESUME_SECRET_LEN),
            shard_name: "up-1".into(),
            addr: "127.0.0.1:7102".parse().unwrap(),
            transport: "quic".into(),
            certificate_sha256: "cd".repeat(32),
        };
        assert_eq!(file.load(7), None);
        file.save(&seat).unwrap();
        assert_eq!(file.load(7), Some(seat.clone()));
        assert_eq!(file.load(8), None, "another account's seat is not this one's");
        let ClientHello::Resume { match_id, seat: n, secret } = seat.credential().unwrap() else {
            panic!("a resume hello")
        };
        assert_eq!((match_id, n, secret), (MatchId(42), 1, [0xab; RESUME_SECRET_LEN]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("state/seat-7.json")).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by the user only: {mode:o}");
        }
        file.clear(7);
        assert_eq!(file.load(7), None);
        SeatFile::new(None).save(&seat).unwrap();
    }
}
