//! Errors a build script can act on: which file, which line, what is wrong,
//! and what to do about it.
//!
//! Every error that has a place in a `.proto` file prints like a compiler
//! diagnostic, `path:line:column: message`, through `Display` and `Debug`
//! alike, so `fn main() -> Result<(), keel_build::Error>` in `build.rs`
//! (which prints the `Debug` form) reads the same as `eprintln!("{err}")`.

use std::fmt;
use std::path::{Path, PathBuf};

use miette::Diagnostic;

use crate::suggest;

/// Why compiling `.proto` files failed.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `.proto` file could not be found, read, parsed or type-checked.
    ///
    /// Displays as `path:line:column: message` (1-based) when the location is
    /// known, like a compiler diagnostic. A missing import lists the include
    /// directories searched; an unknown type name suggests the nearest
    /// defined one.
    #[error("{}", Located(.file.as_deref(), *.line, *.column, .message))]
    Proto {
        /// The file the error is in: the path on disk when it could be found
        /// under an include directory, else the name protox knows it by.
        file: Option<PathBuf>,
        /// 1-based line of the error.
        line: Option<usize>,
        /// 1-based column of the error.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// Two things would get the same Rust name in generated code: a message
    /// or enum and an item keel-build generates for a service (`FooClient`,
    /// `FooServer`, the trait `Foo`, the descriptor module `foo`), an rpc and
    /// a method the generated client already has (`new`, `options`, ...), or
    /// two rpcs whose snake_case names are equal.
    ///
    /// Displays as `path:line:column: message`; the message names both
    /// sides and the fix.
    #[error("{}", Located(Some(.file.as_path()), *.line, *.column, .message))]
    Clash {
        /// The `.proto` file declaring `element`.
        file: PathBuf,
        /// 1-based line of `element`'s name.
        line: Option<usize>,
        /// 1-based column of `element`'s name.
        column: Option<usize>,
        /// Full protobuf name of the element to rename (`shop.InventoryClient`,
        /// `shop.Inventory.New`).
        element: String,
        /// What clashes with what, and how to fix it.
        message: String,
    },
    /// keel-build cannot generate working code for `element`: a proto2
    /// extension (prost drops it). Opt
    /// out per element with
    /// [`Builder::skip_unsupported`](crate::Builder::skip_unsupported).
    ///
    /// Displays as `path:line:column: message`.
    #[error("{}", Located(Some(.file.as_path()), *.line, *.column, .message))]
    Unsupported {
        /// The `.proto` file declaring `element`.
        file: PathBuf,
        /// 1-based line of `element`'s name.
        line: Option<usize>,
        /// 1-based column of `element`'s name.
        column: Option<usize>,
        /// Full protobuf name of the element (`shop.Inventory.Watch`), as
        /// `skip_unsupported` takes it.
        element: String,
        /// What is not supported, and how to opt out.
        message: String,
    },
    /// No output directory: `OUT_DIR` is unset (not running in a build
    /// script) and [`Builder::out_dir`](crate::Builder::out_dir) was not called.
    #[error("OUT_DIR is not set: call keel_build from a build script, or set Builder::out_dir")]
    OutDirNotSet,
    /// prost-build failed to generate or write the Rust code.
    #[error("generating Rust code failed: {0}")]
    Codegen(#[source] std::io::Error),
}

/// The same text as `Display`: `fn main() -> Result<(), Error>` prints the
/// `Debug` form, and a build script's output should read like a compiler's.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// Converts a protox error, locating it as precisely as its diagnostic
    /// allows, mapping the proto file name back to a path on disk, and
    /// adding what helps fix it: the include directories searched for a
    /// missing file, the nearest defined name for an unknown one.
    pub(crate) fn from_protox(err: &protox::Error, includes: &[PathBuf]) -> Error {
        let file = err.file().map(|name| locate(name, includes));
        let (line, column) = location(err).unzip();
        let mut message = err.to_string();
        // Labels often say what was expected at the spot ("expected ';'"):
        // keep them when the headline does not already say it.
        if let Some(labels) = err.labels() {
            for label in labels {
                if let Some(text) = label.label() {
                    if !message.contains(text) {
                        message.push_str(" (");
                        message.push_str(text);
                        message.push(')');
                    }
                }
            }
        }
        if let Some(help) = err.help() {
            message.push_str("; ");
            message.push_str(&help.to_string());
        }
        if err.is_file_not_found() {
            message.push_str("; ");
            message.push_str(&searched(includes));
        } else if let Some(name) = err.file() {
            if let Some(hint) = suggest::for_unknown_name(&message, name, includes) {
                message.push_str("; ");
                message.push_str(&hint);
            }
        }
        Error::Proto {
            file,
            line,
            column,
            message,
        }
    }
}

/// "include directories searched: `a`, `b`", for file-not-found messages.
pub(crate) fn searched(includes: &[PathBuf]) -> String {
    let dirs: Vec<String> = includes
        .iter()
        .map(|dir| format!("`{}`", dir.display()))
        .collect();
    let dirs = if dirs.is_empty() {
        "none".to_owned()
    } else {
        dirs.join(", ")
    };
    format!(
        "include directories searched: {dirs} (the well-known `google/protobuf/*.proto` \
         files are built in)"
    )
}

/// The 1-based (line, column) of the first labelled span, if any.
fn location(err: &protox::Error) -> Option<(usize, usize)> {
    let source = err.source_code()?;
    let span = err.labels()?.next()?;
    let contents = source.read_span(span.inner(), 0, 0).ok()?;
    Some((contents.line() + 1, contents.column() + 1))
}

/// The path of `name` under the first include directory that has it.
pub(crate) fn locate(name: &str, includes: &[PathBuf]) -> PathBuf {
    includes
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| Path::new(name).to_path_buf())
}

/// `path:line:column: message`, leaving out what is unknown.
struct Located<'a>(Option<&'a Path>, Option<usize>, Option<usize>, &'a str);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Located(file, line, column, message) = *self;
        if let Some(file) = file {
            write!(f, "{}:", file.display())?;
            if let Some(line) = line {
                write!(f, "{line}:")?;
                if let Some(column) = column {
                    write!(f, "{column}:")?;
                }
            }
            f.write_str(" ")?;
        }
        f.write_str(message)
    }
}
