//! opal-gateway: pushes OPAL events to webhooks and WebSocket clients by declarative routes.

fn main() -> std::process::ExitCode {
    eprintln!("opal-gateway: not yet wired");
    std::process::ExitCode::FAILURE
}
