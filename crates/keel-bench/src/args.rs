//! Command-line values shared by the subcommands, parsed by clap: the
//! flags every load-running subcommand takes ([`RunArgs`]), value parsers
//! that say what a flag needs, and what every subcommand does with its
//! report ([`main`]).

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

/// What every subcommand does once its flags parsed: run, print the
/// report; a failed run exits with 1 (usage errors exit with 2, from clap).
pub fn main<O>(name: &str, opts: &O, run: impl FnOnce(&O) -> Result<String, String>) -> ExitCode {
    match run(opts) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nkeel-bench {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A number that may be written with underscores (`3_000_000`).
fn number<T: FromStr>(v: &str) -> Result<T, String> {
    v.replace('_', "")
        .parse::<T>()
        .map_err(|_| format!("`{v}` is not a number"))
}

/// `--seconds`: a run's length in seconds, in (0, 600].
pub fn seconds(v: &str) -> Result<f64, String> {
    let s: f64 = number(v)?;
    if s > 0.0 && s <= 600.0 {
        Ok(s)
    } else {
        Err("needs a number in (0, 600]".into())
    }
}

/// `--rounds`: how many interleaved rounds, in 1..=100.
pub fn rounds(v: &str) -> Result<usize, String> {
    let r: usize = number(v)?;
    if (1..=100).contains(&r) {
        Ok(r)
    } else {
        Err("needs an integer in 1..=100".into())
    }
}

/// A positive integer (underscores allowed).
pub fn positive(v: &str) -> Result<u64, String> {
    match number::<u64>(v)? {
        0 => Err("needs a positive integer".into()),
        n => Ok(n),
    }
}

/// A list of names given as one flag's value (a type of its own: clap
/// would take a `Vec` for a flag given several times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names(pub Vec<String>);

/// A comma-separated list whose every name is in `known`.
pub fn names(list: &str, known: &[&str]) -> Result<Names, String> {
    let names: Vec<String> = list.split(',').map(str::to_string).collect();
    match names.iter().find(|n| !known.contains(&n.as_str())) {
        Some(bad) => Err(format!(
            "unknown name `{bad}` (known: {})",
            known.join(", ")
        )),
        None => Ok(Names(names)),
    }
}

/// The flags the load-running subcommands share: `--seconds S` (one run's
/// length), `--rounds R` (runs per setting, alternating) and `--quick`
/// (short runs).
#[derive(Debug, Clone, Copy, PartialEq, Default, clap::Args)]
pub struct RunArgs {
    /// Length of each run, in seconds (0, 600]
    #[arg(long, value_name = "S", value_parser = seconds)]
    pub seconds: Option<f64>,
    /// Runs per setting, alternating (1..=100)
    #[arg(long, value_name = "R", value_parser = rounds)]
    pub rounds: Option<usize>,
    /// Short runs: a smoke run
    #[arg(long)]
    pub quick: bool,
}

/// The values of [`RunArgs`] once a subcommand's defaults filled them in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Runs {
    /// Length of one run, in seconds.
    pub seconds: f64,
    /// Runs per setting.
    pub rounds: usize,
    /// `--quick` was given (the subcommand may shorten other work too).
    pub quick: bool,
}

/// A subcommand's defaults for [`Runs`].
#[derive(Debug, Clone, Copy)]
pub struct RunDefaults {
    /// `--seconds` when not given.
    pub seconds: f64,
    /// `--seconds` when not given and `--quick` is.
    pub quick_seconds: f64,
    /// `--rounds` when not given.
    pub rounds: usize,
}

impl RunArgs {
    /// The runs these flags ask for, with `defaults` where they say nothing.
    pub fn runs(&self, defaults: RunDefaults) -> Runs {
        let default_seconds = if self.quick {
            defaults.quick_seconds
        } else {
            defaults.seconds
        };
        Runs {
            seconds: self.seconds.unwrap_or(default_seconds),
            rounds: self.rounds.unwrap_or(defaults.rounds),
            quick: self.quick,
        }
    }
}

impl Runs {
    /// One run's length.
    pub fn run_length(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }

    /// Warm-up before a setting's runs: a fifth of a run, within 0.1-1 s.
    pub fn warm_up(&self) -> Duration {
        Duration::from_secs_f64((self.seconds / 5.0).clamp(0.1, 1.0))
    }
}

/// Parses `line` (flags, split at spaces) as the flags `A` of one
/// subcommand: what the subcommands' tests check their flags with.
#[cfg(test)]
pub fn parse<A: clap::Args>(line: &str) -> Result<A, clap::Error> {
    use clap::Parser;
    #[derive(Parser)]
    struct Line<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    let argv = std::iter::once("keel-bench").chain(line.split_whitespace());
    Line::<A>::try_parse_from(argv).map(|l| l.args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_and_errors_name_the_flag() {
        assert_eq!(seconds("2.5"), Ok(2.5));
        assert!(seconds("0").unwrap_err().contains("(0, 600]"));
        assert_eq!(positive("3_000"), Ok(3000));
        assert!(names("x,y", &["x"]).unwrap_err().contains("`y`"));
        assert!(rounds("0").is_err());
        let r: RunArgs = parse("--seconds 1.5 --rounds 5").expect("parses");
        let defaults = RunDefaults {
            seconds: 3.0,
            quick_seconds: 0.5,
            rounds: 3,
        };
        assert_eq!(
            r.runs(defaults),
            Runs {
                seconds: 1.5,
                rounds: 5,
                quick: false
            }
        );
        let quick: RunArgs = parse("--quick").expect("parses");
        assert_eq!(quick.runs(defaults).seconds, 0.5);
        let err = parse::<RunArgs>("--seconds 0").expect_err("out of range");
        assert!(err.to_string().contains("--seconds"), "{err}");
        let err = parse::<RunArgs>("--frobnicate").expect_err("unknown");
        assert!(err.to_string().contains("--frobnicate"), "{err}");
    }
}
