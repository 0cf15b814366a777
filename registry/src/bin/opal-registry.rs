use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    opal_registry::serve(opal_registry::Config::parse()).await
}
