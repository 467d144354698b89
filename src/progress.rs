//! Progress for operators: one indicatif bar per pipeline stage (count, rate, ETA), drawn on
//! stderr only when it is a terminal, so logs and CI output stay clean.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// The three stage bars.
pub struct Progress {
    _multi: MultiProgress,
    pub prepare: ProgressBar,
    pub register: ProgressBar,
    pub package: ProgressBar,
}

/// The bars' look: stage, bar, count, rate, ETA.
fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>9} [{bar:32.cyan/blue}] {pos:>7}/{len:7} {rate:>9} ETA {eta:>4} {msg}",
    )
    .expect("static template")
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1}/s", state.per_sec());
        },
    )
    .progress_chars("=> ")
}

/// One stage's bar alone (the air-gapped stages), for `total` devices; hidden unless
/// stderr is a terminal.
pub fn stage_bar(name: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(style());
    bar.set_prefix(name.to_string());
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

impl Progress {
    /// Bars for `total` devices still to do; hidden unless stderr is a terminal.
    pub fn new(total: u64) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = style();
        let bar = |name: &str| {
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(style.clone());
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        };
        Self {
            prepare: bar("prepare"),
            register: bar("register"),
            package: bar("package"),
            _multi: multi,
        }
    }

    /// Prints a line above the bars (or plainly when they are hidden).
    pub fn println(&self, line: &str) {
        if self.prepare.is_hidden() {
            eprintln!("{line}");
        } else {
            self.prepare.println(line);
        }
    }

    /// Removes the bars, leaving the terminal clean for the summary.
    pub fn finish(&self) {
        for bar in [&self.prepare, &self.register, &self.package] {
            bar.finish_and_clear();
        }
    }
}
