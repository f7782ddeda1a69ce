//! An image's record (`/vpe/images/NAME/info.toml`) and the rules over it:
//! who may see and change it, which generation a reference names, and how
//! generations are numbered. Pure functions of their inputs (the manager
//! does the namespace I/O), answering with the errors users will read.

use std::collections::BTreeMap;
use std::fmt;

use fs_proto::vpe::{ImageGen, ImageInfo};
use fs_proto::{ErrorCode, RemoteError};
use serde::{Deserialize, Serialize};

use crate::spec::check_name;
use crate::store::layout;

/// One generation of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenRecord {
    /// Generation number.
    pub gen: u64,
    /// Content id (hex).
    pub id: String,
    /// Bytes of kernel + initrd + disk.
    pub size: u64,
    /// When it was made (ms since the epoch).
    pub created_ms: u64,
    /// How it was made.
    pub origin: String,
}

/// `info.toml`: an image's owner, visibility, tags and generations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Image name.
    pub name: String,
    /// Owner (federation user name).
    pub owner: String,
    /// Visible to every user.
    #[serde(default)]
    pub shared: bool,
    /// The highest generation number ever given (numbers are never reused).
    #[serde(default)]
    pub last_gen: u64,
    /// Tag -> generation.
    #[serde(default)]
    pub tags: BTreeMap<String, u64>,
    /// Generations, oldest first.
    #[serde(default)]
    pub generations: Vec<GenRecord>,
}

/// Which generation of an image a user means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The newest generation.
    Latest,
    /// A generation number.
    Gen(u64),
    /// A tag.
    Tag(String),
}

/// `NAME`, `NAME:GEN` or `NAME:TAG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Image name.
    pub name: String,
    /// Generation.
    pub selector: Selector,
}

fn invalid(msg: impl Into<String>) -> RemoteError {
    RemoteError::new(ErrorCode::InvalidArgument, msg)
}

/// Checks an image, tag or template name.
pub fn check(field: &'static str, name: &str) -> Result<(), RemoteError> {
    check_name(field, name, 64).map_err(|e| invalid(e.to_string()))
}

impl ImageRef {
    /// Parses `NAME[:GEN|:TAG]`.
    pub fn parse(s: &str) -> Result<Self, RemoteError> {
        let (name, selector) = match s.split_once(':') {
            None => (s, Selector::Latest),
            Some((name, sel)) if !sel.is_empty() && sel.bytes().all(|b| b.is_ascii_digit()) => {
                (name, Selector::Gen(sel.parse().map_err(|_| invalid(format!("generation {sel:?} is too large")))?))
            }
            Some((name, tag)) => {
                check("tag", tag)?;
                (name, Selector::Tag(tag.to_string()))
            }
        };
        check("image name", name)?;
        Ok(Self { name: name.to_string(), selector })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Latest => write!(f, "{}", self.name),
            Selector::Gen(g) => write!(f, "{}:{g}", self.name),
            Selector::Tag(t) => write!(f, "{}:{t}", self.name),
        }
    }
}

impl ImageRecord {
    /// A new image with no generations, owned by `owner`.
    pub fn new(name: &str, owner: &str, shared: bool) -> Self {
        Self {
            name: name.into(),
            owner: owner.into(),
            shared,
            last_gen: 0,
            tags: BTreeMap::new(),
            generations: Vec::new(),
        }
    }

    /// Parses `info.toml`.
    pub fn parse(text: &str) -> Result<Self, RemoteError> {
        toml::from_str(text).map_err(|e| RemoteError::new(ErrorCode::Internal, format!("image record: {e}")))
    }

    /// Serialises `info.toml`.
    pub fn to_toml(&self) -> String {
        // Our own struct of strings, numbers and maps with string keys: cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Whether `user` may see (and run) this image.
    pub fn visible_to(&self, user: &str) -> bool {
        self.shared || self.owner == user
    }

    /// Refuses `user` unless they own the image. Images a user may not see
    /// are reported as absent, so private names do not leak.
    pub fn check_owner(&self, user: &str) -> Result<(), RemoteError> {
        if self.owner == user {
            Ok(())
        } else if self.visible_to(user) {
            Err(RemoteError::new(
                ErrorCode::PermissionDenied,
                format!("image {} belongs to {}; only its owner may change it", self.name, self.owner),
            ))
        } else {
            Err(not_found(&self.name))
        }
    }

    /// The generation `selector` names.
    pub fn resolve(&self, selector: &Selector) -> Result<&GenRecord, RemoteError> {
        let gen = match selector {
            Selector::Latest => {
                return self.generations.last().ok_or_else(|| {
                    RemoteError::new(ErrorCode::NotFound, format!("image {} has no generation", self.name))
                })
            }
            Selector::Gen(g) => *g,
            Selector::Tag(t) => *self
                .tags
                .get(t)
                .ok_or_else(|| RemoteError::new(ErrorCode::NotFound, format!("image {} has no tag {t}", self.name)))?,
        };
        self.generations.iter().find(|g| g.gen == gen).ok_or_else(|| {
            RemoteError::new(ErrorCode::NotFound, format!("image {} has no generation {gen}", self.name))
        })
    }

    /// The number the next generation gets.
    pub fn next_gen(&self) -> u64 {
        self.last_gen.max(self.generations.iter().map(|g| g.gen).max().unwrap_or(0)) + 1
    }

    /// Records a new generation (numbered by [`Self::next_gen`]).
    pub fn add(&mut self, record: GenRecord) {
        self.last_gen = self.last_gen.max(record.gen);
        self.generations.push(record);
        self.generations.sort_by_key(|g| g.gen);
    }

    /// Forgets generation `gen` and the tags on it.
    pub fn remove_gen(&mut self, gen: u64) -> Result<GenRecord, RemoteError> {
        let pos = self.generations.iter().position(|g| g.gen == gen).ok_or_else(|| {
            RemoteError::new(ErrorCode::NotFound, format!("image {} has no generation {gen}", self.name))
        })?;
        self.tags.retain(|_, g| *g != gen);
        Ok(self.generations.remove(pos))
    }

    /// Points `tag` at `gen` (moving it if it exists).
    pub fn set_tag(&mut self, tag: &str, gen: u64) -> Result<(), RemoteError> {
        check("tag", tag)?;
        if tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!("tag {tag:?} would read as a generation number")));
        }
        self.tags.insert(tag.to_string(), gen);
        Ok(())
    }

    /// The wire form.
    pub fn to_info(&self) -> ImageInfo {
        ImageInfo {
            name: self.name.clone(),
            owner: self.owner.clone(),
            shared: self.shared,
            tags: self.tags.iter().map(|(t, g)| (t.clone(), *g)).collect(),
            generations: self
                .generations
                .iter()
                .map(|g| ImageGen {
                    gen: g.gen,
                    id: g.id.clone(),
                    size: g.size,
                    created_ms: g.created_ms,
                    origin: g.origin.clone(),
                })
                .collect(),
            path: layout::image_dir(&self.name),
        }
    }
}

/// The error for an image that does not exist or that the caller may not see.
pub fn not_found(name: &str) -> RemoteError {
    RemoteError::new(ErrorCode::NotFound, format!("no image named {name} (see `vpe image ls`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(g: u64) -> GenRecord {
        GenRecord { gen: g, id: format!("{g:064x}"), size: 10, created_ms: 0, origin: "registered".into() }
    }

    #[test]
    fn refs_parse_names_generations_and_tags() {
        assert_eq!(ImageRef::parse("deb").unwrap().selector, Selector::Latest);
        assert_eq!(ImageRef::parse("deb:12").unwrap().selector, Selector::Gen(12));
        assert_eq!(ImageRef::parse("deb:stable").unwrap().selector, Selector::Tag("stable".into()));
        assert_eq!(ImageRef::parse("deb:stable").unwrap().to_string(), "deb:stable");
        for bad in ["", ":1", "a/b:1", "deb:", "deb:../x", "../deb", "deb:99999999999999999999999"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generations_are_numbered_once_and_resolved() {
        let mut r = ImageRecord::new("deb", "alice", false);
        assert_eq!(r.resolve(&Selector::Latest).unwrap_err().code, ErrorCode::NotFound);
        r.add(gen(r.next_gen()));
        r.add(gen(r.next_gen()));
        r.set_tag("stable", 1).unwrap();
        assert_eq!(r.resolve(&Selector::Latest).unwrap().gen, 2);
        assert_eq!(r.resolve(&Selector::Tag("stable".into())).unwrap().gen, 1);
        r.remove_gen(2).unwrap();
        assert_eq!(r.next_gen(), 3, "a removed generation's number is not given again");
        r.remove_gen(1).unwrap();
        assert!(r.tags.is_empty(), "tags on a removed generation go with it");
        assert!(r.set_tag("7", 1).is_err());
        let back = ImageRecord::parse(&r.to_toml()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn private_images_are_invisible_and_only_owners_change_them() {
        let mut r = ImageRecord::new("deb", "alice", false);
        assert!(r.visible_to("alice") && !r.visible_to("bob"));
        assert_eq!(r.check_owner("bob").unwrap_err().code, ErrorCode::NotFound);
        r.shared = true;
        assert!(r.visible_to("bob"));
        let e = r.check_owner("bob").unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
        assert!(e.message.contains("belongs to alice"), "{e}");
        r.check_owner("alice").unwrap();
    }
}
