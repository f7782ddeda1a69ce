//! The sample configuration files in the repository parse.

#[test]
fn sample_configs_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let meta = fs_meta::MetaConfig::load(&root.join("fs-meta/meta.toml")).expect("fs-meta/meta.toml");
    assert_eq!(meta.root_mode, 0o1777);
    assert_eq!(meta.users.len(), 1);
    let server = fs_server::ServerConfig::load(&root.join("fs-server/server.toml")).expect("fs-server/server.toml");
    assert_eq!(server.meta.first().name, "meta");
    let client = fs_client::ClientConfig::load(&root.join("fs-client/client.toml")).expect("fs-client/client.toml");
    assert_eq!(client.site, "tokyo");
}
