//! The baseline users fall back to by hand: a directory sent as one tar
//! stream over one TCP connection, unpacked at the other end and synced.
//! Used by `rep_bench` and `wanfs_bench`.

use crate::wan::Wan;
use anyhow::Context;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// `tar -c` of `src` into a TCP connection made by `connect` to
/// `listener`, `tar -x` into `dst` (emptied first) at the other end, then
/// `sync -f dst`. Returns seconds from the first byte to the end of the
/// sync; `dst` is removed afterwards.
pub fn tar_over_tcp(
    src: &Path,
    dst: &Path,
    listener: TcpListener,
    connect: impl FnOnce(SocketAddr) -> std::io::Result<TcpStream>,
) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(dst);
    std::fs::create_dir_all(dst)?;
    let addr = listener.local_addr()?;
    let t = Instant::now();
    let receiver = {
        let dst = dst.to_path_buf();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let (mut sock, _) = listener.accept()?;
            // tar -x may exit at the archive's end marker without reading the rest of the last
            // record; a write into its closed pipe must then fail with EPIPE here instead of
            // killing the process with SIGPIPE (renkei-bench keeps SIGPIPE's default action).
            // The signal is thread-directed: blocked in this thread, it is never delivered.
            let mut pipe = nix::sys::signal::SigSet::empty();
            pipe.add(nix::sys::signal::Signal::SIGPIPE);
            nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&pipe), None)?;
            let mut tar = Command::new("tar").arg("-C").arg(&dst).arg("-xf").arg("-").stdin(Stdio::piped()).spawn()?;
            let mut stdin = tar.stdin.take().context("tar stdin")?;
            match std::io::copy(&mut sock, &mut stdin) {
                Ok(_) => {}
                // tar's exit status below says whether it had the whole archive; the sender's
                // last bytes are read to the end so that it finishes cleanly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    std::io::copy(&mut sock, &mut std::io::sink()).context("draining the tar stream")?;
                }
                Err(e) => return Err(anyhow::Error::from(e).context("receiving the tar stream")),
            }
            drop(stdin);
            anyhow::ensure!(tar.wait()?.success(), "tar -x failed");
            anyhow::ensure!(Command::new("sync").arg("-f").arg(&dst).status()?.success(), "sync failed");
            Ok(())
        })
    };
    let mut sock = connect(addr).context("connecting the tar stream")?;
    let mut tar = Command::new("tar").arg("-C").arg(src).arg("-cf").arg("-").arg(".").stdout(Stdio::piped()).spawn()?;
    let mut out = tar.stdout.take().context("tar stdout")?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sock.write_all(&buf[..n])?;
    }
    sock.shutdown(std::net::Shutdown::Write)?;
    anyhow::ensure!(tar.wait()?.success(), "tar -c failed");
    receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(dst)?;
    Ok(secs)
}

/// [`tar_over_tcp`] from site `from` to site `to` of the emulator (the
/// sockets live in the sites; tar itself reads and writes local disk).
pub fn tar_between_sites(wan: &Wan, from: &str, to: &str, src: &Path, dst: &Path) -> anyhow::Result<f64> {
    let rx = wan.site(to)?;
    let ip = rx.addr();
    let listener = rx.run_in(move || TcpListener::bind((ip, 0)))?;
    let tx = wan.site(from)?;
    tar_over_tcp(src, dst, listener, move |addr| {
        tx.run_in(move || TcpStream::connect(addr)).map_err(std::io::Error::other)
    })
}

/// [`tar_over_tcp`] over loopback.
pub fn tar_on_loopback(src: &Path, dst: &Path) -> anyhow::Result<f64> {
    tar_over_tcp(src, dst, TcpListener::bind("127.0.0.1:0")?, TcpStream::connect)
}
