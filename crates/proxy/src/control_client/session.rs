//! One discovery stream, from Hello until it ends: pushes in, answers, health and
//! certificate reports out.

use super::config_update::answer;
use super::health::HealthReport;
use super::*;
use tokio::sync::{mpsc, watch};
use weft_api::parts::Assembler;
use weft_api::v1::discovery_client::DiscoveryClient;
use weft_api::v1::{control_message, proxy_message, Certificate, Health, ProxyMessage};

/// How often the calls the inbound judged are reported.
const OBSERVED_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How often tapped requests are sent while a tap is open.
const TAP_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// One stream, from Hello until it ends. `progressed` is set once the control plane has
/// sent something, which resets the backoff.
pub(super) async fn session(
    client: &ControlClient,
    proxy: &Arc<Proxy>,
    hello: &Hello,
    health: &mut watch::Receiver<HealthReport>,
    progressed: &mut bool,
) -> Result<(), SessionError> {
    let channel = client.connect().await?;
    let (outbound, queued) = mpsc::channel(8);
    let running = proxy.snapshot();
    let hello = Hello {
        running_version: if running.generation > 0 {
            running.config.version.clone()
        } else {
            String::new()
        },
        ..hello.clone()
    };
    drop(running);
    let report = health.borrow_and_update().clone();
    // The receiver is right here, so these sends cannot fail or wait.
    let _ = outbound.try_send(message(proxy_message::Message::Hello(hello)));
    let _ = outbound.try_send(health_message(report));
    let mut certificate_changed = proxy.certificate_changed.subscribe();
    if let Some(report) = certificate_message(proxy) {
        let _ = outbound.try_send(report);
    }
    let queued = futures_util::stream::unfold(queued, |mut queued| async move {
        queued.recv().await.map(|message| (message, queued))
    });
    let mut inbound = DiscoveryClient::new(channel)
        .connect(queued)
        .await?
        .into_inner();
    tracing::info!("connected to the control plane");
    let mut assembler = Assembler::new(MAX_MESSAGE_BYTES);
    let mut report_calls = tokio::time::interval(OBSERVED_EVERY);
    report_calls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Taps belong to a stream: the control plane opens them again on the new one.
    proxy.taps.stop_all();
    proxy.metrics.taps_open.set(0);
    let mut send_taps = tokio::time::interval(TAP_EVERY);
    send_taps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = send_taps.tick(), if proxy.taps.is_open() => {
                for batch in proxy.taps.take() {
                    let events = message(proxy_message::Message::TapEvents(batch));
                    if outbound.send(events).await.is_err() {
                        return Ok(());
                    }
                }
            }
            _ = report_calls.tick() => {
                let observed = proxy.observed.as_ref().and_then(|o| o.take());
                let reports = observed
                    .map(proxy_message::Message::Observed)
                    .into_iter()
                    .chain(proxy.metrics.traffic.take().map(proxy_message::Message::Traffic));
                for report in reports {
                    if outbound.send(message(report)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            received = inbound.message() => {
                let Some(received) = received? else {
                    return Ok(());
                };
                *progressed = true;
                let Some(received) = received.message else {
                    // A message kind newer than this proxy: nothing to apply or answer.
                    tracing::warn!("ignoring a control-plane message of an unknown kind");
                    continue;
                };
                let whole = match assembler.push(received) {
                    Ok(Some(whole)) => whole,
                    Ok(None) => continue,
                    Err(error) => return Err(SessionError::Parts(error)),
                };
                let whole = match whole {
                    control_message::Message::TapStart(start) => {
                        proxy.taps.start(start);
                        proxy.metrics.taps_open.set(proxy.taps.count() as i64);
                        continue;
                    }
                    control_message::Message::TapStop(stop) => {
                        proxy.taps.stop(stop.id);
                        proxy.metrics.taps_open.set(proxy.taps.count() as i64);
                        continue;
                    }
                    whole => whole,
                };
                // Decoding, compiling and building a large config takes a while: it runs on a
                // blocking thread, and the data path's thread keeps serving meanwhile.
                let applying = proxy.clone();
                let answered = tokio::task::spawn_blocking(move || answer(&applying, whole)).await;
                let answer = match answered {
                    Ok(answer) => answer,
                    Err(error) => {
                        tracing::error!(%error, "applying a pushed configuration failed");
                        None
                    }
                };
                if let Some(answer) = answer {
                    if outbound.send(message(answer)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            changed = health.changed() => {
                changed.map_err(|_| SessionError::HealthGone)?;
                let report = health.borrow_and_update().clone();
                if outbound.send(health_message(report)).await.is_err() {
                    return Ok(());
                }
            }
            Ok(()) = certificate_changed.changed() => {
                if let Some(report) = certificate_message(proxy) {
                    if outbound.send(report).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn message(body: proxy_message::Message) -> ProxyMessage {
    ProxyMessage {
        message: Some(body),
    }
}

/// The certificate in force, for the control plane; `None` without mutual TLS.
fn certificate_message(proxy: &Proxy) -> Option<ProxyMessage> {
    let identity = proxy.tls.as_ref()?;
    Some(message(proxy_message::Message::Certificate(Certificate {
        chain_pem: identity.chain_pem(),
    })))
}

fn health_message(report: HealthReport) -> ProxyMessage {
    message(proxy_message::Message::Health(Health {
        healthy: report.healthy,
        detail: report.detail,
    }))
}
