//! The directory watcher thread ("watcher"): inotify on one directory (the
//! instance socket directory), forwarding every create/delete/modify as a
//! typed `WatchMsg`. What a new or vanished file means is the dispatcher's
//! business.
//!
//! The thread blocks in `poll(2)` on the inotify fd and on one end of a socket
//! pair whose other end lives in the handle, so dropping the handle wakes it
//! immediately; there is no polling loop. If the directory is missing, the
//! parent directory is watched until the name reappears.

use std::ffi::OsString;
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::guard::{error_chain, spawn_named, ThreadExit};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMsg {
    Created(OsString),
    Deleted(OsString),
    Modified(OsString),
    /// IN_Q_OVERFLOW: events were lost, caller should rescan
    Overflow,
    /// the directory itself was deleted/moved away (or is missing at start)
    DirGone,
    /// the directory (re)appeared and is watched again: caller should rescan
    DirBack,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {}", .path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("inotify read failed")]
    Read(#[source] io::Error),
    #[error("waiting for inotify failed")]
    Poll(#[source] io::Error),
    #[error("parent directory {} is gone", .0.display())]
    ParentGone(PathBuf),
    /// Not a failure: the dispatcher dropped its receiver, so we stop.
    #[error("event receiver is gone")]
    ReceiverGone,
}

/// Dropping it closes the wake-up socket, which ends the thread's `poll`, and
/// then joins. Field order: the stop end must go before the join.
#[derive(Debug)]
pub struct WatcherHandle {
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("watcher thread panicked outside its guard");
            }
        }
    }
}

fn dir_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

fn parent_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// Masks meaning the watched object itself is no longer there.
fn gone_mask() -> EventMask {
    EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED | EventMask::UNMOUNT
}

/// Spawns thread "watcher" on `dir`. See the module doc. When the directory
/// exists, it is already watched when this returns, so the caller should scan
/// it afterwards (not before) to learn about files that were already there.
pub fn spawn_watcher<E: Send + 'static>(
    dir: PathBuf,
    tx: Sender<E>,
    map: fn(WatchMsg) -> E,
    on_exit: fn(ThreadExit) -> E,
) -> io::Result<WatcherHandle> {
    let name = dir
        .file_name()
        .map(OsString::from)
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "watched directory has no name"))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let ino = Inotify::init()?;
    let (stop_tx, stop_rx) = UnixStream::pair()?;
    let mut watcher = Watcher {
        ino,
        dir,
        parent,
        name,
        dir_wd: None,
        parent_wd: None,
        tx: tx.clone(),
        map,
        stop: stop_rx,
    };
    // Watch before the thread starts, so that a caller scanning the directory
    // after this returns cannot miss a file created in between.
    watcher
        .add_dir_watch()
        .map_err(|e| io::Error::other(error_chain(&e)))?;
    let thread = spawn_named("watcher", None, tx, on_exit, move || match watcher.run() {
        Ok(()) | Err(WatchError::ReceiverGone) => Ok(()),
        Err(e) => Err(error_chain(&e)),
    })?;
    Ok(WatcherHandle {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

struct Watcher<E> {
    ino: Inotify,
    dir: PathBuf,
    parent: PathBuf,
    name: OsString,
    dir_wd: Option<WatchDescriptor>,
    /// Set only while the directory is gone.
    parent_wd: Option<WatchDescriptor>,
    tx: Sender<E>,
    map: fn(WatchMsg) -> E,
    stop: UnixStream,
}

type RawEvent = (WatchDescriptor, EventMask, Option<OsString>);

impl<E> Watcher<E> {
    fn run(&mut self) -> Result<(), WatchError> {
        if self.dir_wd.is_none() {
            self.send(WatchMsg::DirGone)?;
            self.watch_for_return()?;
        }
        // Room for many events per read; each is 16 bytes plus the name.
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if !self.wait()? {
                return Ok(());
            }
            // Copy out of the buffer first: handling needs `&mut self.ino`.
            let events: Vec<RawEvent> = match self.ino.read_events(&mut buf) {
                Ok(events) => events
                    .map(|e| (e.wd, e.mask, e.name.map(OsString::from)))
                    .collect(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    continue
                }
                Err(e) => return Err(WatchError::Read(e)),
            };
            // Every event of the read is handled, not just the first.
            for event in events {
                self.handle(event)?;
            }
        }
    }

    /// Blocks until inotify has events (true) or the handle is dropped (false).
    fn wait(&self) -> Result<bool, WatchError> {
        let mut fds = [
            libc::pollfd {
                fd: self.ino.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a valid array of two pollfds for the call and
            // both fds are owned by `self`.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if r >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(WatchError::Poll(e));
            }
        }
        // The stop end only ever becomes readable by being closed (EOF/HUP).
        Ok(fds[1].revents == 0)
    }

    fn send(&self, msg: WatchMsg) -> Result<(), WatchError> {
        self.tx
            .send((self.map)(msg))
            .map_err(|_| WatchError::ReceiverGone)
    }

    /// Watches the directory; false when it does not exist (or is not a directory).
    fn add_dir_watch(&mut self) -> Result<bool, WatchError> {
        match self.ino.watches().add(&self.dir, dir_mask()) {
            Ok(wd) => {
                self.dir_wd = Some(wd);
                Ok(true)
            }
            Err(e)
                if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                Ok(false)
            }
            Err(source) => Err(WatchError::Watch {
                path: self.dir.clone(),
                source,
            }),
        }
    }

    /// Called with the directory gone: watches the parent for its name.
    fn watch_for_return(&mut self) -> Result<(), WatchError> {
        let wd = self
            .ino
            .watches()
            .add(&self.parent, parent_mask())
            .map_err(|source| WatchError::Watch {
                path: self.parent.clone(),
                source,
            })?;
        self.parent_wd = Some(wd);
        // The directory may have come back before the parent watch existed,
        // in which case no CREATE event will ever tell us.
        if self.add_dir_watch()? {
            self.back()?;
        }
        Ok(())
    }

    fn back(&mut self) -> Result<(), WatchError> {
        if let Some(wd) = self.parent_wd.take() {
            // Failure only means the parent went away meanwhile; not our concern now.
            let _ = self.ino.watches().remove(wd);
        }
        self.send(WatchMsg::DirBack)
    }

    fn handle(&mut self, (wd, mask, name): RawEvent) -> Result<(), WatchError> {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return self.send(WatchMsg::Overflow);
        }
        if self.dir_wd.as_ref() == Some(&wd) {
            if mask.intersects(gone_mask()) {
                self.dir_wd = None;
                if mask.contains(EventMask::MOVE_SELF) {
                    // A moved directory stays watched under its new name; we
                    // only care about the path, so let go of it.
                    let _ = self.ino.watches().remove(wd);
                }
                self.send(WatchMsg::DirGone)?;
                return self.watch_for_return();
            }
            let Some(name) = name else { return Ok(()) };
            let msg = if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                WatchMsg::Created(name)
            } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
                WatchMsg::Deleted(name)
            } else if mask.contains(EventMask::MODIFY) {
                WatchMsg::Modified(name)
            } else {
                return Ok(());
            };
            return self.send(msg);
        }
        if self.parent_wd.as_ref() == Some(&wd) {
            if mask.intersects(gone_mask()) {
                return Err(WatchError::ParentGone(self.parent.clone()));
            }
            let ours = name.as_deref() == Some(self.name.as_os_str());
            if ours
                && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
                && self.add_dir_watch()?
            {
                return self.back();
            }
        }
        // Anything else is from a watch we already dropped.
        Ok(())
    }
}

#[cfg(test)]
#[path = "watcher_tests.rs"]
mod tests;
