//! Pseudo-terminals for containers and exec sessions with `tty: true`.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;

/// Opens a new pseudo-terminal: `(master, slave)`. The slave becomes the
/// program's stdin, stdout and stderr; the agent keeps the master.
pub fn open() -> std::io::Result<(OwnedFd, OwnedFd)> {
    // CLOEXEC at once: a container spawned meanwhile must not inherit it.
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((master, slave))
}

/// Sets the terminal size (`kubectl exec -t` sends the local one, and
/// again on every resize).
pub fn resize(master: impl AsFd, columns: u16, rows: u16) -> std::io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master, size)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn master_and_slave_talk_and_resize_sticks() {
        let (master, slave) = open().expect("pty");
        resize(&master, 132, 43).expect("resize");
        let size = rustix::termios::tcgetwinsize(&slave).expect("size");
        assert_eq!((size.ws_col, size.ws_row), (132, 43));
        let mut m = std::fs::File::from(master);
        let mut s = std::fs::File::from(slave);
        s.write_all(b"hi\n").expect("write");
        let mut buf = [0u8; 16];
        let n = m.read(&mut buf).expect("read");
        // The line discipline turns \n into \r\n.
        assert_eq!(&buf[..n], b"hi\r\n");
    }
}
