//! "Did you mean ..?" for an unknown type name: the nearest (by edit
//! distance) of the message and enum names defined in the failing file and
//! the files it imports, transitively.
//!
//! protox stops at the first error, so the names are gathered by parsing
//! the files again (parsing only: no names are resolved). That costs a few
//! milliseconds, and only when the build has already failed.

use std::collections::HashSet;
use std::path::PathBuf;

use protox::file::{ChainFileResolver, FileResolver, GoogleFileResolver, IncludeFileResolver};
use protox::prost_reflect::prost_types::DescriptorProto;

/// For a protox message such as `name 'Itme' is not defined`, a hint such
/// as ``did you mean `Item`?``; `None` for other messages, or when nothing
/// defined is close.
pub(crate) fn for_unknown_name(message: &str, file: &str, includes: &[PathBuf]) -> Option<String> {
    let unknown = unknown_name(message)?;
    let (package, names) = defined_names(file, includes);
    let best = nearest(unknown, &package, &names)?;
    Some(format!("did you mean `{best}`?"))
}

/// The name in `name 'X' is not defined` or `'X' resolves to 'Y', which is
/// not defined` (prost-reflect's wording); not option names.
fn unknown_name(message: &str) -> Option<&str> {
    if !message.contains("is not defined") {
        return None;
    }
    let rest = if let Some(rest) = message.strip_prefix("name '") {
        rest
    } else {
        message.strip_prefix('\'')?
    };
    let name = &rest[..rest.find('\'')?];
    Some(name.trim_start_matches('.'))
}

/// The package of `file` and the full names (no leading dot) of every
/// message and enum declared in it and in what it imports.
fn defined_names(file: &str, includes: &[PathBuf]) -> (String, Vec<String>) {
    let mut resolver = ChainFileResolver::new();
    for dir in includes {
        resolver.add(IncludeFileResolver::new(dir.clone()));
    }
    resolver.add(GoogleFileResolver::new());
    let mut names = Vec::new();
    let mut package = String::new();
    let mut seen = HashSet::new();
    let mut queue = vec![file.to_owned()];
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Ok(parsed) = resolver.open_file(&name) else {
            continue;
        };
        let proto = parsed.file_descriptor_proto();
        if name == file {
            package = proto.package().to_owned();
        }
        let prefix = if proto.package().is_empty() {
            String::new()
        } else {
            format!("{}.", proto.package())
        };
        for message in &proto.message_type {
            collect(&prefix, message, &mut names);
        }
        for enumeration in &proto.enum_type {
            names.push(format!("{prefix}{}", enumeration.name()));
        }
        queue.extend(proto.dependency.iter().cloned());
    }
    (package, names)
}

fn collect(prefix: &str, message: &DescriptorProto, names: &mut Vec<String>) {
    let full = format!("{prefix}{}", message.name());
    let nested = format!("{full}.");
    for inner in &message.nested_type {
        if !inner.options.as_ref().is_some_and(|o| o.map_entry()) {
            collect(&nested, inner, names);
        }
    }
    for enumeration in &message.enum_type {
        names.push(format!("{nested}{}", enumeration.name()));
    }
    names.push(full);
}

/// The spelling of a defined name nearest to `unknown`, written the way
/// `unknown` was (relative to `package`, or qualified), if it is close: at
/// most a third of its characters (and at least one) differ.
fn nearest(unknown: &str, package: &str, names: &[String]) -> Option<String> {
    let local = format!("{package}.");
    let mut best: Option<(usize, String)> = None;
    for full in names {
        let mut spellings = vec![full.as_str()];
        if let Some(relative) = full.strip_prefix(&local) {
            spellings.push(relative);
        }
        if let Some((_, simple)) = full.rsplit_once('.') {
            spellings.push(simple);
        }
        for spelling in spellings {
            let distance = edit_distance(unknown, spelling);
            if distance > 0 && best.as_ref().is_none_or(|(d, _)| distance < *d) {
                best = Some((distance, spelling.to_owned()));
            }
        }
    }
    let limit = (unknown.chars().count() / 3).max(1);
    best.filter(|(distance, _)| *distance <= limit)
        .map(|(_, name)| name)
}

/// Edit distance over characters: insertions, deletions, substitutions and
/// swaps of two neighbours (`Itme` is one edit from `Item`) each count one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("Item", "Item"), 0);
        assert_eq!(edit_distance("Itme", "Item"), 1);
        assert_eq!(edit_distance("Iten", "Item"), 1);
        assert_eq!(edit_distance("Items", "Item"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn the_unknown_name_is_read_from_both_wordings() {
        assert_eq!(unknown_name("name 'Itme' is not defined"), Some("Itme"));
        assert_eq!(
            unknown_name("'foo.Foo' resolves to 'com.foo.Foo', which is not defined"),
            Some("foo.Foo")
        );
        assert_eq!(unknown_name("option field 'x' is not defined"), None);
        assert_eq!(unknown_name("expected ';'"), None);
        assert_eq!(unknown_name("name 't.Inventory' is defined twice"), None);
    }

    #[test]
    fn nearest_keeps_the_spelling_and_refuses_far_names() {
        let names = ["shop.Item".to_owned(), "shop.Item.Kind".to_owned()];
        assert_eq!(nearest("Iten", "shop", &names).as_deref(), Some("Item"));
        assert_eq!(
            nearest("shop.Iten", "other", &names).as_deref(),
            Some("shop.Item")
        );
        assert_eq!(
            nearest("Item.Knd", "shop", &names).as_deref(),
            Some("Item.Kind")
        );
        assert_eq!(nearest("Basket", "shop", &names), None);
    }
}
