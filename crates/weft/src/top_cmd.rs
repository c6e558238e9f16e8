//! `weft top`: the busiest edges of the mesh, refreshed in place, from the control plane's
//! golden metrics (`GET /api/v1/stats`). On a terminal it is a full-screen table (q, Esc or
//! Ctrl-C quits); anywhere else (a pipe, a file, CI) it prints the table again at each
//! refresh, as plain lines.

use crate::api_client::{ApiArgs, ApiClient};
use crate::stat_cmd::{millis, percent};
use bytes::Bytes;
use clap::Args;
use http::Method;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use serde_json::Value;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct TopArgs {
    /// The window the numbers cover: `1m`, `10m` or `1h`.
    #[arg(long, default_value = "1m", value_parser = ["1m", "10m", "1h"])]
    window: String,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    every: u64,
    /// Refresh this many times, then exit (for scripts); until interrupted by default.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    api: ApiArgs,
}

const HEADER: [&str; 8] = [
    "SOURCE",
    "DESTINATION",
    "RPS",
    "SUCCESS",
    "P50",
    "P99",
    "DENIED",
    "MTLS",
];

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.api)?;
    if std::io::stdout().is_terminal() {
        full_screen(&client, &args)
    } else {
        plain(&client, &args)
    }
}

/// The edges of the window, busiest first.
fn busiest(client: &ApiClient, window: &str) -> anyhow::Result<Vec<[String; 8]>> {
    let view = client
        .send(
            Method::GET,
            &format!("/api/v1/stats?window={window}"),
            None,
            Bytes::new(),
        )?
        .success()?
        .json()?;
    let mut edges = view["edges"].as_array().cloned().unwrap_or_default();
    let rps = |edge: &Value| edge["rps"].as_f64().unwrap_or(0.0);
    edges.sort_by(|a, b| rps(b).total_cmp(&rps(a)));
    Ok(edges
        .iter()
        .map(|edge| {
            let text = |field: &str| edge[field].as_str().unwrap_or("-").to_owned();
            [
                text("source"),
                text("destination"),
                format!("{:.1}", rps(edge)),
                percent(&edge["successRate"]),
                millis(&edge["p50Ms"]),
                millis(&edge["p99Ms"]),
                edge["denied"].as_u64().unwrap_or(0).to_string(),
                percent(&edge["mtlsShare"]),
            ]
        })
        .collect())
}

fn plain(client: &ApiClient, args: &TopArgs) -> anyhow::Result<()> {
    let mut refreshes = 0;
    loop {
        let rows = busiest(client, &args.window)?;
        println!(
            "weft top: busiest edges over the last {} ({})",
            args.window,
            weft_identity::format_utc(std::time::SystemTime::now())
        );
        crate::table::print_rows(&HEADER, &rows);
        println!();
        refreshes += 1;
        if args.count.is_some_and(|count| refreshes >= count) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(args.every));
    }
}

fn full_screen(client: &ApiClient, args: &TopArgs) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut refreshes = 0;
        loop {
            // A failed refresh is shown, not fatal: the control plane may restart.
            let (rows, status) = match busiest(client, &args.window) {
                Ok(rows) => {
                    let status = format!(
                        "{} edges over the last {}, refreshed every {} s; q quits",
                        rows.len(),
                        args.window,
                        args.every
                    );
                    (rows, status)
                }
                Err(error) => (Vec::new(), format!("refresh failed: {error:#}; q quits")),
            };
            terminal.draw(|frame| {
                let [table_area, status_area] =
                    Layout::vertical([Constraint::Min(3), Constraint::Length(1)])
                        .areas(frame.area());
                let widths = [
                    Constraint::Percentage(22),
                    Constraint::Percentage(22),
                    Constraint::Length(9),
                    Constraint::Length(9),
                    Constraint::Length(8),
                    Constraint::Length(8),
                    Constraint::Length(7),
                    Constraint::Length(8),
                ];
                let table = Table::new(rows.iter().map(|row| Row::new(row.clone())), widths)
                    .header(Row::new(HEADER).style(Style::new().add_modifier(Modifier::BOLD)))
                    .block(Block::bordered().title(" weft top: busiest edges "));
                frame.render_widget(table, table_area);
                frame.render_widget(Paragraph::new(status.as_str()), status_area);
            })?;
            refreshes += 1;
            if args.count.is_some_and(|count| refreshes >= count) {
                return Ok(());
            }
            let next = Instant::now() + Duration::from_secs(args.every);
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                if !event::poll(left)? {
                    break;
                }
                if let Event::Key(key) = event::read()? {
                    let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
                        && key.code == KeyCode::Char('c');
                    let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c;
                    if key.kind == KeyEventKind::Press && quit {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}
