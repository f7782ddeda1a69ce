//! Sequences with a length bound checked while decoding: a peer's frame
//! never makes us allocate or handle more elements than the bound, however
//! few bytes each element takes on the wire (a one-byte request inside a
//! 16 MiB frame would otherwise decode to millions of requests).

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

thread_local! {
    /// Why the last decode on this thread refused a sequence: postcard keeps
    /// no message for a custom error, and the peer deserves to hear which
    /// bound it broke.
    static REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Take the reason of a refusal made by this thread's last decode.
pub fn take_refusal() -> Option<String> {
    REFUSAL.with(|r| r.borrow_mut().take())
}

fn refuse<E: Error>(n: usize, what: &str, max: usize) -> E {
    let why = format!("{what} holds at most {max} elements, not {n}");
    REFUSAL.with(|r| *r.borrow_mut() = Some(why.clone()));
    E::custom(why)
}

struct Bounded<T> {
    max: usize,
    what: &'static str,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} of at most {} elements", self.what, self.max)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let declared = seq.size_hint();
        if let Some(n) = declared.filter(|n| *n > self.max) {
            return Err(refuse(n, self.what, self.max));
        }
        let mut out = Vec::with_capacity(declared.unwrap_or(0).min(self.max));
        while let Some(x) = seq.next_element()? {
            if out.len() == self.max {
                return Err(refuse(self.max + 1, self.what, self.max));
            }
            out.push(x);
        }
        Ok(out)
    }
}

/// Decode a sequence of at most `max` elements (`what` names it in the error).
pub fn seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    max: usize,
    what: &'static str,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(Bounded { max, what, _t: PhantomData })
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug)]
    struct Three(#[serde(deserialize_with = "three")] Vec<u8>);

    fn three<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        super::seq(d, 3, "a test list")
    }

    #[test]
    fn a_sequence_over_its_bound_is_refused_before_it_is_read() {
        let ok = postcard::to_allocvec(&Three(vec![1, 2, 3])).unwrap();
        assert_eq!(postcard::from_bytes::<Three>(&ok).unwrap().0, vec![1, 2, 3]);
        let long = postcard::to_allocvec(&Three(vec![1, 2, 3, 4])).unwrap();
        assert!(postcard::from_bytes::<Three>(&long).is_err());
        assert_eq!(super::take_refusal().as_deref(), Some("a test list holds at most 3 elements, not 4"));
        // A length prefix claiming billions of elements, with no bytes behind it.
        assert!(postcard::from_bytes::<Three>(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
