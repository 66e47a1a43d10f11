//! Errors a build script can act on: which file, which line, what is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

use miette::Diagnostic;

/// Why compiling `.proto` files failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `.proto` file could not be found, read, parsed or type-checked.
    ///
    /// Displays as `path:line:column: message` (1-based) when the location is
    /// known, like a compiler diagnostic.
    #[error("{}", ProtoDisplay(self))]
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
    /// No output directory: `OUT_DIR` is unset (not running in a build
    /// script) and [`Builder::out_dir`](crate::Builder::out_dir) was not called.
    #[error("OUT_DIR is not set: call keel_build from a build script, or set Builder::out_dir")]
    OutDirNotSet,
    /// prost-build failed to generate or write the Rust code.
    #[error("generating Rust code failed: {0}")]
    Codegen(#[source] std::io::Error),
}

impl Error {
    /// Converts a protox error, locating it as precisely as its diagnostic
    /// allows, and mapping the proto file name back to a path on disk.
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
        Error::Proto {
            file,
            line,
            column,
            message,
        }
    }
}

/// The 1-based (line, column) of the first labelled span, if any.
fn location(err: &protox::Error) -> Option<(usize, usize)> {
    let source = err.source_code()?;
    let span = err.labels()?.next()?;
    let contents = source.read_span(span.inner(), 0, 0).ok()?;
    Some((contents.line() + 1, contents.column() + 1))
}

/// The path of `name` under the first include directory that has it.
fn locate(name: &str, includes: &[PathBuf]) -> PathBuf {
    includes
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| Path::new(name).to_path_buf())
}

struct ProtoDisplay<'a>(&'a Error);

impl fmt::Display for ProtoDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Error::Proto {
            file,
            line,
            column,
            message,
        } = self.0
        else {
            return Ok(());
        };
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
