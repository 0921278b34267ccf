//! The result table.

use std::fmt::Write;

/// One line of the result table.
pub struct Row {
    pub group: String,
    pub variant: String,
    pub result: String,
    /// e.g. "0.97× raw INSERT"
    pub ratio: String,
    /// e.g. "≥ 0.95×"
    pub target: String,
    /// Some(true) met, Some(false) missed, None no target.
    pub met: Option<bool>,
}

/// One comparison of a row with a baseline figure.
pub struct Cmp<'a> {
    pub base: f64,
    pub name: &'a str,
    pub target: Option<f64>,
}

impl<'a> Cmp<'a> {
    pub fn new(base: f64, name: &'a str) -> Cmp<'a> {
        Cmp {
            base,
            name,
            target: None,
        }
    }

    pub fn target(base: f64, name: &'a str, target: f64) -> Cmp<'a> {
        Cmp {
            base,
            name,
            target: Some(target),
        }
    }
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    pub fn row(&mut self, group: &str, variant: impl Into<String>, result: impl Into<String>) {
        let row = Row {
            group: group.to_string(),
            variant: variant.into(),
            result: result.into(),
            ratio: String::new(),
            target: String::new(),
            met: None,
        };
        println!("  {:<28} {:<58} {}", row.group, row.variant, row.result);
        self.rows.push(row);
    }

    /// A row compared with baselines: `value / base` must reach each comparison's target.
    pub fn ratio_row(
        &mut self,
        group: &str,
        variant: impl Into<String>,
        result: impl Into<String>,
        value: f64,
        cmps: &[Cmp<'_>],
    ) {
        self.ratio_row_with(group, variant, result, value, cmps, "");
    }

    /// [`ratio_row`](Report::ratio_row) with a further remark in the ratio column.
    pub fn ratio_row_with(
        &mut self,
        group: &str,
        variant: impl Into<String>,
        result: impl Into<String>,
        value: f64,
        cmps: &[Cmp<'_>],
        extra: &str,
    ) {
        let mut ratios = Vec::new();
        let mut targets = Vec::new();
        let mut met = None;
        for c in cmps {
            let ratio = if c.base > 0.0 { value / c.base } else { 0.0 };
            ratios.push(format!("{} {}", fmt_ratio(ratio), c.name));
            if let Some(t) = c.target {
                targets.push(format!("≥ {} {}", fmt_ratio(t), c.name));
                met = Some(met.unwrap_or(true) && ratio >= t);
            }
        }
        let row = Row {
            group: group.to_string(),
            variant: variant.into(),
            result: result.into(),
            ratio: if extra.is_empty() {
                ratios.join("; ")
            } else {
                ratios.push(extra.to_string());
                ratios.join("; ")
            },
            target: targets.join("; "),
            met,
        };
        println!(
            "  {:<28} {:<58} {:<12} {} {}",
            row.group,
            row.variant,
            row.result,
            row.ratio,
            match row.met {
                Some(true) => "(target met)",
                Some(false) => "(target MISSED)",
                None => "",
            }
        );
        self.rows.push(row);
    }

    /// A row whose verdict was decided by the caller (e.g. a latency bound).
    pub fn judged_row(
        &mut self,
        group: &str,
        variant: impl Into<String>,
        result: impl Into<String>,
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        let row = Row {
            group: group.to_string(),
            variant: variant.into(),
            result: result.into(),
            ratio: String::new(),
            target: target.into(),
            met,
        };
        println!(
            "  {:<28} {:<58} {} {}",
            row.group, row.variant, row.result, row.target
        );
        self.rows.push(row);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  note: {text}");
        self.notes.push(text);
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("| Benchmark | Variant | Result | Ratio | Target | |\n");
        out.push_str("|---|---|---:|---|---|---|\n");
        let mut last_group = "";
        for r in &self.rows {
            let group = if r.group == last_group { "" } else { &r.group };
            last_group = &r.group;
            let verdict = match r.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "",
            };
            let _ = writeln!(
                out,
                "| {group} | {} | {} | {} | {} | {verdict} |",
                r.variant, r.result, r.ratio, r.target
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

pub fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.2}×")
    }
}
