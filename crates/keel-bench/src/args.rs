//! Command-line values shared by the subcommands: one place that reads a
//! flag's value, checks it, and says what was wrong.

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

/// What every subcommand does with its arguments: parse them (`Ok(None)`
/// is `--help`), run, print the report; a usage error exits with 2 and the
/// usage text, a failed run with 1.
pub fn main<O>(
    name: &str,
    usage: &str,
    args: &[String],
    parse: impl FnOnce(&[String]) -> Result<Option<O>, String>,
    run: impl FnOnce(&O) -> Result<String, String>,
) -> ExitCode {
    let opts = match parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("keel-bench {name}: {e}\n\n{usage}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
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

/// The value after `flag`, parsed and accepted by `ok`; otherwise an error
/// naming the flag and `what` it needs ("a number in (0, 600]").
/// Underscores are ignored, so `3_000_000` works.
pub fn value<'a, T: FromStr>(
    it: &mut impl Iterator<Item = &'a String>,
    flag: &str,
    what: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<T, String> {
    let v = it.next().ok_or_else(|| format!("{flag} needs {what}"))?;
    match v.replace('_', "").parse::<T>() {
        Ok(x) if ok(&x) => Ok(x),
        _ => Err(format!("{flag} needs {what}, not `{v}`")),
    }
}

/// `--seconds`: a run's length in seconds, in (0, 600].
pub fn seconds<'a>(it: &mut impl Iterator<Item = &'a String>) -> Result<f64, String> {
    value(it, "--seconds", "a number in (0, 600]", |s: &f64| {
        *s > 0.0 && *s <= 600.0
    })
}

/// `--rounds`: how many interleaved rounds, in 1..=100.
pub fn rounds<'a>(it: &mut impl Iterator<Item = &'a String>) -> Result<usize, String> {
    value(it, "--rounds", "an integer in 1..=100", |r: &usize| {
        (1..=100).contains(r)
    })
}

/// The flags the load-running subcommands share: `--seconds S` (one run's
/// length), `--rounds R` (runs per setting, alternating), `--quick` (short
/// runs) and `-h`/`--help`.
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

impl Runs {
    /// Parses `args`; `Ok(None)` means `--help`. Flags other than the
    /// shared ones go to `extra` with the remaining arguments (for their
    /// values); it returns `Ok(false)` for a flag it does not know.
    pub fn parse<'a>(
        args: &'a [String],
        defaults: RunDefaults,
        mut extra: impl FnMut(&str, &mut std::slice::Iter<'a, String>) -> Result<bool, String>,
    ) -> Result<Option<Runs>, String> {
        let mut quick = false;
        let mut seconds = None;
        let mut rounds = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-h" | "--help" => return Ok(None),
                "--quick" => quick = true,
                "--seconds" => seconds = Some(self::seconds(&mut it)?),
                "--rounds" => rounds = Some(self::rounds(&mut it)?),
                other => {
                    if !extra(other, &mut it)? {
                        return Err(format!("unknown option `{other}`"));
                    }
                }
            }
        }
        let default_seconds = if quick {
            defaults.quick_seconds
        } else {
            defaults.seconds
        };
        Ok(Some(Runs {
            seconds: seconds.unwrap_or(default_seconds),
            rounds: rounds.unwrap_or(defaults.rounds),
            quick,
        }))
    }

    /// [`Runs::parse`] for subcommands with no flags of their own.
    pub fn parse_only(args: &[String], defaults: RunDefaults) -> Result<Option<Runs>, String> {
        Runs::parse(args, defaults, |_, _| Ok(false))
    }

    /// One run's length.
    pub fn run_length(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }

    /// Warm-up before a setting's runs: a fifth of a run, within 0.1-1 s.
    pub fn warm_up(&self) -> Duration {
        Duration::from_secs_f64((self.seconds / 5.0).clamp(0.1, 1.0))
    }
}

/// A comma-separated list after `flag` whose every name is in `known`.
pub fn names<'a>(
    it: &mut impl Iterator<Item = &'a String>,
    flag: &str,
    known: &[&str],
) -> Result<Vec<String>, String> {
    let list = it.next().ok_or_else(|| format!("{flag} needs a list"))?;
    let names: Vec<String> = list.split(',').map(str::to_string).collect();
    match names.iter().find(|n| !known.contains(&n.as_str())) {
        Some(bad) => Err(format!("unknown name `{bad}` in {flag}")),
        None => Ok(names),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_are_checked_and_errors_name_the_flag() {
        let a = args(&["2.5", "0", "3_000", "x,y"]);
        let mut it = a.iter();
        assert_eq!(seconds(&mut it), Ok(2.5));
        assert!(
            seconds(&mut it)
                .unwrap_err()
                .contains("--seconds needs a number")
        );
        assert_eq!(
            value(&mut it, "--iters", "a count", |n: &u64| *n > 0),
            Ok(3000)
        );
        assert!(
            names(&mut it, "--peers", &["x"])
                .unwrap_err()
                .contains("`y`")
        );
        assert!(rounds(&mut it).unwrap_err().contains("--rounds needs"));
    }
}
