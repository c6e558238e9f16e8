//! Text patterns in authorization rules (SPIFFE ids, paths): exact, prefix, or a glob whose
//! `*` stands for part of one path segment. Matching is linear and allocates nothing.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum Pattern {
    /// `*` alone.
    Any,
    Exact(String),
    /// Written with one `*`, at the end: matches what starts with the rest.
    Prefix(String),
    /// Written with a `*` elsewhere: each `*` matches characters other than `/`.
    Glob(String),
}

impl Pattern {
    /// The pattern `text` is written as, with `*` as described on each variant.
    pub fn parse(text: &str) -> Pattern {
        match text.find('*') {
            None => Pattern::Exact(text.to_owned()),
            Some(_) if text == "*" => Pattern::Any,
            Some(at) if at == text.len() - 1 => Pattern::Prefix(text[..at].to_owned()),
            Some(_) => Pattern::Glob(text.to_owned()),
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(exact) => text == exact,
            Pattern::Prefix(prefix) => text.starts_with(prefix.as_str()),
            Pattern::Glob(glob) => glob_matches(glob, text),
        }
    }
}

/// Segment by segment (so a `*` never crosses a `/`), each with the classic greedy
/// wildcard match, which is O(pattern × text) at worst: no backtracking blow-up on a long
/// hostile path.
fn glob_matches(glob: &str, text: &str) -> bool {
    let mut globs = glob.split('/');
    let mut texts = text.split('/');
    loop {
        match (globs.next(), texts.next()) {
            (None, None) => return true,
            (Some(g), Some(t)) if segment_matches(g.as_bytes(), t.as_bytes()) => {}
            _ => return false,
        }
    }
}

fn segment_matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    // Where the last `*` was, and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if g < glob.len() && glob[g] == b'*' {
            star = Some((g, t));
            g += 1;
        } else if g < glob.len() && glob[g] == text[t] {
            g += 1;
            t += 1;
        } else if let Some((star_g, star_t)) = star {
            // Let the last `*` take one more character and try again from there.
            g = star_g + 1;
            t = star_t + 1;
            star = Some((star_g, star_t + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&b| b == b'*')
}
