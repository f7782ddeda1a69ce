//! `renkei chown`, `ln` (hard and -s), `xattr get|set|ls|rm` and `cksum`
//! (issue 17, acceptance 4) against a federation of real processes; cksum's
//! answer is compared with BLAKE3 computed here over the same bytes.

use super::common::{json, text};
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chown_ln_xattr_and_cksum_from_the_command_line() {
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        let local = fed.dir().join("local");
        let data = pattern(700_000, 3);
        std::fs::write(&local, &data).unwrap();
        let l = local.to_string_lossy().into_owned();
        fed.renkei_ok(None, &["put", &l, "/f"]);
        let stat = |p: &str| json(&fed.renkei_ok(None, &["--json", "stat", p]));

        // cksum: the stored BLAKE3 is the hash of the bytes, computed here.
        let want = blake3::hash(&data).to_hex().to_string();
        let ck = json(&fed.renkei_ok(None, &["--json", "cksum", "/f"]));
        assert_eq!(ck["blake3"], want.as_str(), "{ck}");
        assert_eq!(ck["size"], data.len() as u64);
        let out = fed.renkei_ok(None, &["cksum", "/f", &l]);
        assert!(out.contains(&want) && out.contains("matches"), "{out}");
        let changed = fed.dir().join("changed");
        let mut other = data.clone();
        other[123_456] ^= 1;
        std::fs::write(&changed, &other).unwrap();
        let out = fed.renkei(None, &["--json", "cksum", "/f", &changed.to_string_lossy()]);
        assert_eq!(out.status.code(), Some(1), "a differing local copy exits 1: {}", text(&out));
        let v = json(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            (v["matches"].as_bool(), v["local_blake3"].as_str()),
            (Some(false), Some(blake3::hash(&other).to_hex().as_str()))
        );
        fed.renkei_ok(None, &["put", &changed.to_string_lossy(), "/f2"]);
        assert_eq!(
            json(&fed.renkei_ok(None, &["--json", "cksum", "/f2"]))["blake3"],
            blake3::hash(&other).to_hex().as_str()
        );

        // chown: by numbers, and by names an admin gave.
        fed.renkei_ok(None, &["chown", "4242:77", "/f"]);
        let st = stat("/f");
        assert_eq!((st["uid"].as_u64(), st["gid"].as_u64()), (Some(4242), Some(77)), "{st}");
        fed.renkei_ok(None, &["user", "add", "carol", "--uid", "2001"]);
        fed.renkei_ok(None, &["group", "add", "lab", "--gid", "5000"]);
        fed.renkei_ok(None, &["chown", "carol:lab", "/f"]);
        let st = stat("/f");
        assert_eq!((st["uid"].as_u64(), st["gid"].as_u64()), (Some(2001), Some(5000)), "{st}");
        fed.renkei_ok(None, &["chown", ":77", "/f"]);
        assert_eq!(stat("/f")["gid"], 77);
        let out = fed.renkei(None, &["chown", "nosuchuser", "/f"]);
        assert!(!out.status.success() && text(&out).contains("no user named"), "{}", text(&out));
        // A plain user may not give a file away.
        let carol = fed.user_config("carol");
        let out = fed.renkei_as(&carol, &["chown", "1234", "/f"]);
        assert!(!out.status.success(), "carol gave her file away: {}", text(&out));
        assert_eq!(stat("/f")["uid"], 2001);

        // ln: a hard link is the same inode; -s stores the target.
        fed.renkei_ok(None, &["ln", "/f2", "/hard"]);
        let (a, b) = (stat("/f2"), stat("/hard"));
        assert_eq!(a["ino"], b["ino"]);
        assert_eq!(b["nlink"], 2);
        fed.renkei_ok(None, &["ln", "-s", "/f2", "/soft"]);
        assert_eq!(stat("/soft")["kind"], "symlink");
        assert_eq!(
            fed.renkei_ok(None, &["cksum", "/hard"]).split_whitespace().next(),
            Some(blake3::hash(&other).to_hex().as_str())
        );
        let out = fed.renkei(None, &["ln", "/f2", "/hard"]);
        assert!(!out.status.success(), "an existing name is refused: {}", text(&out));

        // xattr: set, get, ls, rm.
        fed.renkei_ok(None, &["xattr", "set", "/f2", "user.comment", "hello there"]);
        assert_eq!(fed.renkei_ok(None, &["xattr", "get", "/f2", "user.comment"]).trim_end(), "hello there");
        let v = json(&fed.renkei_ok(None, &["--json", "xattr", "get", "/hard", "user.comment"]));
        assert_eq!(v["value"], "hello there", "through the hard link too");
        fed.renkei_ok(None, &["xattr", "set", "/f2", "user.second", "2"]);
        let names = json(&fed.renkei_ok(None, &["--json", "xattr", "ls", "/f2"]));
        assert_eq!(names, serde_json::json!(["user.comment", "user.second"]));
        fed.renkei_ok(None, &["xattr", "rm", "/f2", "user.comment"]);
        assert_eq!(json(&fed.renkei_ok(None, &["--json", "xattr", "ls", "/f2"])), serde_json::json!(["user.second"]));
        let out = fed.renkei(None, &["xattr", "get", "/f2", "user.comment"]);
        assert!(!out.status.success(), "a removed attribute is gone: {}", text(&out));
    })
    .await
}
