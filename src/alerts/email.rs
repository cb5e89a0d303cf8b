//! Alert emails over SMTP (lettre): multipart plain text + HTML, with the
//! outbox row's idempotency key as Message-ID.

use super::{render, Delivery, DeliveryOutcome, SmtpTls, AlertSettings};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub fn message(delivery: &Delivery, settings: &AlertSettings) -> Result<Message, String> {
    let from: Mailbox = settings
        .smtp_from
        .parse()
        .map_err(|error| format!("synthetic_monitoring.smtp_from is not a valid address: {error}"))?;
    let to: Mailbox = delivery.destination.parse().map_err(|error| format!("invalid recipient: {error}"))?;
    let alert = &delivery.payload;
    Message::builder()
        .from(from)
        .to(to)
        .subject(render::headline(alert))
        .message_id(Some(format!("<{}@synthetic-monitoring>", delivery.idempotency_key)))
        .multipart(MultiPart::alternative_plain_html(render::plain_text(alert, settings), render::html(alert, settings)))
        .map_err(|error| format!("could not build the email: {error}"))
}

fn transport(settings: &AlertSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>, lettre::transport::smtp::Error> {
    let host = settings.smtp_host.as_str();
    let builder = match settings.smtp_tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
        SmtpTls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
    };
    let builder = builder.port(settings.smtp_port).timeout(Some(settings.timeout));
    Ok(if settings.smtp_user.is_empty() {
        builder.build()
    } else {
        builder.credentials(Credentials::new(settings.smtp_user.clone(), settings.smtp_password.clone())).build()
    })
}

pub async fn send(delivery: &Delivery, settings: &AlertSettings) -> DeliveryOutcome {
    let id = delivery.id;
    if settings.smtp_host.is_empty() {
        // Not permanent: the alert waits (with backoff) until a server is configured.
        return DeliveryOutcome::failed(id, "synthetic_monitoring.smtp_host is not set".into(), false, None);
    }
    let message = match message(delivery, settings) {
        Ok(message) => message,
        Err(error) => return DeliveryOutcome::failed(id, error, true, None),
    };
    let mailer = match transport(settings) {
        Ok(mailer) => mailer,
        Err(error) => return DeliveryOutcome::failed(id, format!("SMTP setup failed: {error}"), false, None),
    };
    match tokio::time::timeout(settings.timeout, mailer.send(message)).await {
        Ok(Ok(_)) => DeliveryOutcome::delivered(id),
        Ok(Err(error)) => DeliveryOutcome::failed(
            id,
            format!("SMTP {}:{} refused or failed: {error}", settings.smtp_host, settings.smtp_port),
            error.is_permanent(),
            None,
        ),
        Err(_) => DeliveryOutcome::failed(
            id,
            format!("SMTP {}:{} did not finish within {} ms", settings.smtp_host, settings.smtp_port, settings.timeout.as_millis()),
            false,
            None,
        ),
    }
}
