//! Plain-text tables, shared by every benchmark.
//!
//! Benchmarks print their results as one aligned table that can be pasted
//! into an issue or a commit message: ASCII only, columns separated by two
//! spaces, optional group titles spanning several columns, and an optional
//! `|` before a column that starts a new group.
//!
//! ```text
//!                 ---- ns ----   |  - ratio -
//! size   mode     keel     box   |       box
//! -----  ------  -----  ------   |  --------
//! 64 B   single    3.1    15.2   |     4.90x
//! ```

use std::fmt;

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text columns.
    Left,
    /// Number columns, so that digits line up.
    Right,
}

#[derive(Debug)]
struct Column {
    title: String,
    align: Align,
    /// Draw a `|` before this column.
    rule_before: bool,
}

/// A title above columns `first..=last`.
#[derive(Debug)]
struct Group {
    first: usize,
    last: usize,
    title: String,
}

/// A table built column by column, then row by row; `Display` renders it.
#[derive(Debug, Default)]
pub struct Table {
    columns: Vec<Column>,
    groups: Vec<Group>,
    rows: Vec<Vec<String>>,
}

const GAP: &str = "  ";
const RULE: &str = "  |  ";

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a column.
    pub fn column(mut self, title: &str, align: Align) -> Self {
        self.columns.push(Column {
            title: title.to_string(),
            align,
            rule_before: false,
        });
        self
    }

    /// Adds a column preceded by a vertical rule (the start of a group).
    pub fn column_after_rule(mut self, title: &str, align: Align) -> Self {
        self = self.column(title, align);
        self.columns.last_mut().expect("just pushed").rule_before = true;
        self
    }

    /// Puts `title` above columns `first..=last` (indices in adding order).
    pub fn group(mut self, first: usize, last: usize, title: &str) -> Self {
        assert!(first <= last, "group {title:?}: first column after last");
        self.groups.push(Group {
            first,
            last,
            title: title.to_string(),
        });
        self
    }

    /// Appends a row; it must have one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.columns.len(),
            "a row needs one cell per column"
        );
        self.rows.push(cells);
    }

    /// Width of each column: its widest cell or title, widened where a
    /// group's title is wider than the columns under it.
    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self
            .columns
            .iter()
            .map(|c| c.title.chars().count())
            .collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                w[i] = w[i].max(cell.chars().count());
            }
        }
        for g in &self.groups {
            let title = g.title.chars().count() + 4; // " - title - " at least
            let span = self.span(&w, g.first, g.last);
            if title > span {
                w[g.last] += title - span;
            }
        }
        w
    }

    /// Characters from the start of column `first` to the end of `last`.
    fn span(&self, w: &[usize], first: usize, last: usize) -> usize {
        (first..=last)
            .map(|i| w[i] + if i > first { self.sep(i).len() } else { 0 })
            .sum()
    }

    fn sep(&self, i: usize) -> &'static str {
        if self.columns[i].rule_before {
            RULE
        } else {
            GAP
        }
    }

    fn line(&self, w: &[usize], cells: &[String], out: &mut String) {
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str(self.sep(i));
            }
            let pad = w[i] - cell.chars().count();
            match self.columns[i].align {
                Align::Left => {
                    out.push_str(cell);
                    out.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(cell);
                }
            }
        }
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.widths();
        let mut out = String::new();
        if !self.groups.is_empty() {
            // Each column's cell in the group line: the part of a group
            // title that falls on it, or blanks; separators keep their shape.
            let mut line = String::new();
            let mut i = 0;
            while i < self.columns.len() {
                if i > 0 {
                    line.push_str(self.sep(i));
                }
                match self.groups.iter().find(|g| g.first == i) {
                    Some(g) => {
                        let span = self.span(&w, g.first, g.last);
                        let title = format!(" {} ", g.title);
                        let dashes = span - title.chars().count();
                        line.extend(std::iter::repeat_n('-', dashes / 2));
                        line.push_str(&title);
                        line.extend(std::iter::repeat_n('-', dashes - dashes / 2));
                        i = g.last + 1;
                    }
                    None => {
                        line.extend(std::iter::repeat_n(' ', w[i]));
                        i += 1;
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let titles: Vec<String> = self.columns.iter().map(|c| c.title.clone()).collect();
        self.line(&w, &titles, &mut out);
        let rules: Vec<String> = w.iter().map(|&n| "-".repeat(n)).collect();
        self.line(&w, &rules, &mut out);
        for row in &self.rows {
            self.line(&w, row, &mut out);
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_titles_and_groups() {
        let mut t = Table::new()
            .column("size", Align::Left)
            .column("keel", Align::Right)
            .column("box", Align::Right)
            .column_after_rule("box/keel", Align::Right)
            .group(1, 2, "ns per pair")
            .group(3, 3, "ratio");
        t.row(vec![
            "64 B".into(),
            "3.1".into(),
            "15.2".into(),
            "4.90x".into(),
        ]);
        t.row(vec![
            "4 KiB".into(),
            "12.0".into(),
            "9.5".into(),
            "0.79x".into(),
        ]);
        let s = t.to_string();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 5, "{s}");
        // Right-aligned cells end where their title ends.
        let end = |line: &str, needle: &str| line.find(needle).expect(needle) + needle.len();
        assert_eq!(end(lines[1], "keel"), end(lines[3], "3.1"));
        assert_eq!(end(lines[1], "keel"), end(lines[4], "12.0"));
        assert_eq!(end(lines[1], "box/keel"), end(lines[4], "0.79x"));
        // The rule sits at the same place on every line below the groups.
        let bar = lines[1].find('|').expect("rule");
        assert!(lines[1..].iter().all(|l| l.find('|') == Some(bar)), "{s}");
        // The group title spans its columns: it ends where `box` ends.
        assert!(lines[0].contains(" ns per pair "), "{s}");
        assert_eq!(lines[0][..bar].trim_end().len(), end(lines[1], "box"));
    }
}
