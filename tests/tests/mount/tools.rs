//! Real tools on the mount (acceptance 2): tar + diff -r, git, rsync -a in
//! and out, sqlite3.

use crate::common::{enabled, sh, sh_out, tool, TestMount};
use tests::procs::ProcFederation;
use tests::with_timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tar_git_rsync_sqlite_work_on_the_mount() {
    if !enabled("tar_git_rsync_sqlite_work_on_the_mount") {
        return;
    }
    for t in ["tar", "git", "rsync", "sqlite3", "diff"] {
        if !tool(t) {
            assert!(!crate::common::strict(), "{t} is not installed (RENKEI_TEST_STRICT=1)");
            eprintln!("skipping: {t} is not installed");
            return;
        }
    }
    with_timeout(600, async {
        let fed = ProcFederation::up(1).await;
        let m = TestMount::new(&fed, None, "/", "").await;
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let mnt = m.path.display().to_string();

        // A source tree with nested dirs, symlinks, odd modes, a big file and empty files.
        sh(w, "mkdir -p src/a/b/c src/empty && for i in $(seq 1 60); do head -c $((i * 997)) /dev/urandom > src/a/f$i; done \
               && head -c 3000000 /dev/urandom > src/a/b/big && : > src/a/b/c/zero && ln -s ../f1 src/a/b/link \
               && chmod 700 src/a/b && chmod 640 src/a/f2 && tar -C src -cf tree.tar .").await;

        // tar extract onto the mount, then diff -r against the original.
        sh(w, &format!("mkdir {mnt}/tar && tar -C {mnt}/tar -xf tree.tar && diff -r src {mnt}/tar")).await;

        // git: init, add, commit, log, status, on the mount.
        let git = format!(
            "cd {mnt} && mkdir repo && cd repo && git init -q && git config user.email t@example.org && git config user.name t \
             && cp -r {w}/src/a . && git add -A && git commit -qm first && echo more >> a/f1 && git commit -qam second \
             && test \"$(git log --oneline | wc -l)\" = 2 && test -z \"$(git status --porcelain)\" && git fsck --no-progress",
            w = w.display()
        );
        sh(w, &git).await;

        // rsync -a in and out, compare both ways (content, modes, symlinks).
        sh(w, &format!("rsync -a src/ {mnt}/rs/ && rsync -a {mnt}/rs/ back/ && diff -r src back && diff -r src {mnt}/rs \
                        && test \"$(stat -c %a back/a/f2)\" = 640 && test \"$(readlink back/a/b/link)\" = ../f1")).await;

        // sqlite3: create, insert, query on the mount.
        let out = sh_out(w, &format!("cd {mnt} && sqlite3 db.sqlite 'create table t(x); insert into t values (1),(2),(3); select sum(x) from t;'")).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "sqlite3 failed: {stdout} {stderr}");
        assert_eq!(stdout.trim(), "6");
        let again = sh(w, &format!("cd {mnt} && sqlite3 db.sqlite 'select count(*) from t;'")).await;
        assert_eq!(again.trim(), "3");

        m.unmount().await;
        // What went through the mount is in the federation, whole.
        let c = fed.client(None).await;
        let big = c.get_bytes("/tar/a/b/big").await.unwrap();
        assert_eq!(big, std::fs::read(w.join("src/a/b/big")).unwrap());
    })
    .await
}
