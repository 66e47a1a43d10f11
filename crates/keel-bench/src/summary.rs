//! What every benchmark's report needs besides the table: the median of a
//! cell's samples and how busy the machine was.

/// (max - min) / median of `xs`: how far rounds of one figure disagree.
pub fn spread(xs: &[f64]) -> f64 {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (hi - lo) / median(xs).unwrap_or(f64::NAN)
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The 1-minute load average, as `/proc/loadavg` says it (`n/a` elsewhere).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "n/a".to_string())
}

/// The tonic release the benchmarks compare with, as reports name it.
pub const TONIC: &str = "tonic 0.14.9";

/// Appends the line saying where servers and clients run: each server in
/// its own process and the clients in this one, all on tokio multi-thread
/// runtimes of [`echo::WORKERS`](crate::echo::WORKERS) workers.
pub fn runtimes_line(out: &mut String) {
    let w = crate::echo::WORKERS;
    out.push_str(&format!(
        "  each server in its own process, tokio multi-thread x{w}; clients in this process, tokio multi-thread x{w}\n"
    ));
}

/// Appends the line on the machine a report ran on: its cores, the load
/// average at the start and the end, and how long the run took.
pub fn machine_line(out: &mut String, cores: usize, load: (&str, &str), seconds: f64) {
    let (start, end) = load;
    out.push_str(&format!(
        "  machine: {cores} cores, load average {start} at start, {end} at end; run took {seconds:.0} s\n"
    ));
}

/// Appends the line listing the cells whose rounds disagreed by more than
/// `threshold` (`noisy`, each named with its spread) of `cells` in all;
/// `what` is the figure ("QPS", "messages/s").
pub fn spread_line(out: &mut String, what: &str, noisy: &[String], cells: usize, threshold: f64) {
    out.push_str(&format!(
        "{what} spread across rounds, (max-min)/median: {} of {cells} cells above {:.0}%{}{}\n",
        noisy.len(),
        threshold * 100.0,
        if noisy.is_empty() { "" } else { ": " },
        noisy.join(", ")
    ));
}

/// A count for a table cell, its thousands grouped (`-` when not finite).
pub fn count_cell(x: f64) -> String {
    if x.is_finite() {
        crate::echo::group_thousands(x.round() as u64)
    } else {
        "-".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
