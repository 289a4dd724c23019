//! Announcing the PoP's anycast prefix through an existing BGP daemon.
//! edgepop does not speak BGP: `Announcer` is the seam (BIRD 2 through
//! `birdc` today; an ExaBGP or GoBGP driver would be another impl), and
//! `Announcement` decides, from a stream of readiness checks, when to
//! announce (after `rise` ready checks: no flapping) and when to withdraw
//! (after `fall` failed ones; a dead node fails every check).

use crate::config::AnycastConfig;
use async_trait::async_trait;
use std::path::PathBuf;

#[async_trait]
pub trait Announcer: Send + Sync {
    async fn announce(&self) -> Result<(), String>;
    async fn withdraw(&self) -> Result<(), String>;
}

/// BIRD 2: a `static` protocol holds the prefix and is exported over BGP;
/// enabling it announces the prefix, disabling it withdraws it at once.
pub struct Bird {
    birdc: PathBuf,
    socket: PathBuf,
    protocol: String,
}

impl Bird {
    pub fn new(config: &AnycastConfig) -> Self {
        Bird {
            birdc: config.birdc.clone(),
            socket: config.socket.clone(),
            protocol: config.protocol.clone(),
        }
    }

    /// `birdc enable|disable <protocol>`; BIRD answers `<protocol>: enabled`
    /// (or `already enabled`), anything else is an error.
    async fn switch(&self, verb: &str) -> Result<(), String> {
        let out = tokio::process::Command::new(&self.birdc)
            .arg("-s")
            .arg(&self.socket)
            .arg(verb)
            .arg(&self.protocol)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("{}: {e}", self.birdc.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let done = format!("{verb}d");
        let ok = text.lines().any(|l| {
            l.starts_with(&format!("{}:", self.protocol)) && l.trim_end().ends_with(&done)
        });
        if ok {
            Ok(())
        } else {
            Err(format!("birdc {verb} {}: {}", self.protocol, text.trim()))
        }
    }
}

#[async_trait]
impl Announcer for Bird {
    async fn announce(&self) -> Result<(), String> {
        self.switch("enable").await
    }

    async fn withdraw(&self) -> Result<(), String> {
        self.switch("disable").await
    }
}

/// What the announcement should become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Announce,
    Withdraw,
}

/// Rise/fall over readiness checks, and what the daemon was last told.
#[derive(Debug)]
pub struct Announcement {
    rise: u32,
    fall: u32,
    ready_streak: u32,
    failed_streak: u32,
    /// None until a threshold is first reached.
    desired: Option<Action>,
    /// What the daemon confirmed last (None: unknown, e.g. at start).
    applied: Option<Action>,
}

impl Announcement {
    pub fn new(rise: u32, fall: u32) -> Self {
        Announcement {
            rise,
            fall,
            ready_streak: 0,
            failed_streak: 0,
            desired: None,
            applied: None,
        }
    }

    /// One check's result; returns what to tell the daemon, if anything
    /// (again after a failed attempt, until `applied` confirms it).
    pub fn observe(&mut self, ready: bool) -> Option<Action> {
        if ready {
            self.ready_streak += 1;
            self.failed_streak = 0;
            if self.ready_streak >= self.rise {
                self.desired = Some(Action::Announce);
            }
        } else {
            self.failed_streak += 1;
            self.ready_streak = 0;
            if self.failed_streak >= self.fall {
                self.desired = Some(Action::Withdraw);
            }
        }
        self.desired.filter(|d| self.applied != Some(*d))
    }

    /// The daemon did what it was told.
    pub fn applied(&mut self, action: Action) {
        self.applied = Some(action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_after_rise_and_withdraws_after_fall() {
        let mut a = Announcement::new(3, 2);
        assert_eq!(a.observe(true), None);
        assert_eq!(a.observe(true), None);
        assert_eq!(a.observe(true), Some(Action::Announce));
        a.applied(Action::Announce);
        assert_eq!(a.observe(true), None);
        // One failed check is not enough; a ready one in between resets.
        assert_eq!(a.observe(false), None);
        assert_eq!(a.observe(true), None);
        assert_eq!(a.observe(false), None);
        assert_eq!(a.observe(false), Some(Action::Withdraw));
        a.applied(Action::Withdraw);
        // Flapping readiness never reaches the rise count.
        for _ in 0..5 {
            assert_eq!(a.observe(true), None);
            assert_eq!(a.observe(false), None);
        }
    }

    #[test]
    fn a_refused_command_is_repeated_until_the_daemon_confirms() {
        let mut a = Announcement::new(1, 1);
        assert_eq!(a.observe(false), Some(Action::Withdraw));
        // Not applied (the daemon was down): asked again on the next check.
        assert_eq!(a.observe(false), Some(Action::Withdraw));
        a.applied(Action::Withdraw);
        assert_eq!(a.observe(false), None);
    }
}
