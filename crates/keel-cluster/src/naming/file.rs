//! `file://`: servers listed in a file, one per line, re-read periodically.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use super::{Announcer, NamingError, NamingService, NamingSink, Problems, check_interval};
use crate::endpoint::Endpoint;

/// Servers listed in a file, one entry per line in [`Endpoint::parse`]
/// syntax (`host:port` or `host:port weight=N`). Blank lines and everything
/// after a `#` are ignored:
///
/// ```text
/// # frontends of the east zone
/// 10.0.0.1:8000
/// 10.0.0.2:8000 weight=2   # the bigger machine
/// ```
///
/// [`FileNaming::open`] reads the file once, so a missing file or a bad line
/// is an error when the channel is built. [`NamingService::run`] sends that
/// set, then re-reads the file every `interval` and sends the set whenever
/// it changes. A file that becomes unreadable, empty, or gains a bad line
/// while running keeps the last good set (the problem is reported once on
/// stderr). Replace the file atomically (write a new file, then rename it
/// over the old one) so that a read never sees half an edit: a line cut in
/// the middle can still be a valid, wrong, address.
#[derive(Debug)]
pub struct FileNaming {
    path: PathBuf,
    interval: Duration,
    /// The set read by `open`, sent first by `run`.
    initial: Vec<Endpoint>,
}

impl FileNaming {
    /// Reads and parses `path` now; re-reads it every `interval` (above
    /// zero) once running.
    pub fn open(path: impl AsRef<Path>, interval: Duration) -> Result<FileNaming, NamingError> {
        let path = path.as_ref();
        let url = url_of(path);
        check_interval(&url, interval)?;
        if path.as_os_str().is_empty() {
            return Err(NamingError::new(
                url,
                "no file path: give file:///path/to/servers",
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| NamingError::new(&url, read_error(path, &e)))?;
        let initial = parse_file(&text).map_err(|reason| NamingError::new(&url, reason))?;
        Ok(FileNaming {
            path: path.to_owned(),
            interval,
            initial,
        })
    }
}

impl NamingService for FileNaming {
    fn run(self: Box<Self>, sink: NamingSink) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let FileNaming {
            path,
            interval,
            initial,
        } = *self;
        Box::pin(async move {
            let mut announcer = Announcer::new(sink);
            let mut problems = Problems::new(url_of(&path));
            if !announcer.offer(initial) {
                return;
            }
            loop {
                tokio::time::sleep(interval).await;
                let parsed = match tokio::fs::read_to_string(&path).await {
                    Ok(text) => parse_file(&text),
                    Err(e) => Err(read_error(&path, &e)),
                };
                match parsed {
                    Ok(set) => {
                        problems.clear();
                        if !announcer.offer(set) {
                            return;
                        }
                    }
                    Err(problem) => problems.report(problem),
                }
            }
        })
    }
}

fn url_of(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn read_error(path: &Path, e: &std::io::Error) -> String {
    format!("cannot read {}: {e}", path.display())
}

/// Parses a server file; the reason (naming the line) when it cannot be
/// used.
fn parse_file(text: &str) -> Result<Vec<Endpoint>, String> {
    let mut set = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split_once('#').map_or(line, |(entry, _comment)| entry);
        if entry.trim().is_empty() {
            continue;
        }
        set.push(Endpoint::parse(entry).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    if set.is_empty() {
        return Err("the file lists no servers (one host:port per line)".to_owned());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_skip_blank_lines_and_comments() {
        let text = "# servers\n\n10.0.0.1:80\r\n  10.0.0.2:80 weight=2 # big\n\t\n";
        assert_eq!(
            parse_file(text).unwrap(),
            vec![
                Endpoint::new("10.0.0.1:80"),
                Endpoint::new("10.0.0.2:80").with_weight(2),
            ]
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        let e = parse_file("# c\n10.0.0.1:80\n10.0.0.2\n").unwrap_err();
        assert!(e.starts_with("line 3: "), "{e}");
        assert!(e.contains("10.0.0.2"), "{e}");
        let e = parse_file("# only a comment\n\n").unwrap_err();
        assert!(e.contains("no servers"), "{e}");
    }
}
