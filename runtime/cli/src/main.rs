//! `warren`: the operator's entry point. Runs directories of plugins on the Warren runtime, talks
//! to their agents, and scaffolds and builds plugins.
//!
//! Exit codes: 0 success, 1 a message failed, 2 bad setup (arguments, manifests, plugins).

/// mimalloc instead of glibc's malloc, with Warren's settings (`warren_runtime::allocator`).
#[global_allocator]
static GLOBAL: warren_runtime::allocator::MiMalloc = warren_runtime::allocator::MiMalloc;

mod build;
mod inspect;
mod new;
mod output;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a failed message.
pub const EXIT_MESSAGE_FAILED: u8 = 1;
/// Exit code for a bad setup.
pub const EXIT_SETUP: u8 = 2;

/// Run AutoGen-style agents compiled to WebAssembly components.
///
/// Without a subcommand, runs the main job: builds the example `worker` and `monitor` plugins and
/// runs AutoGen's Complete Example on them.
#[derive(Debug, Parser)]
#[command(name = "warren", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings and errors only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    /// Print every output line, logs included, as one JSON object.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load every plugin under the directories and run them.
    Run(run::RunArgs),
    /// Show a plugin's manifest, imports, exports and handled message types.
    Inspect {
        /// The plugin directory (or its plugin.toml).
        plugin: PathBuf,
    },
    /// Check plugin directories without running anything.
    Validate {
        /// Directories to search for plugins.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Create a new plugin crate on the guest SDK.
    New {
        /// The plugin (and agent type) name.
        name: String,
        /// Where to create it (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Compile plugin crates to components and place each next to its manifest.
    Build(build::BuildArgs),
    /// The main job (the default): AutoGen's Complete Example on the wasm worker and monitor.
    Demo,
}

fn main() -> ExitCode {
    warren_runtime::allocator::tune();
    let cli = Cli::parse();
    output::init(cli.json, cli.verbose, cli.quiet);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::fatal(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let code = rt.block_on(async {
        match cli.command.unwrap_or(Command::Demo) {
            Command::Run(args) => run::run(args).await,
            Command::Inspect { plugin } => inspect::inspect(&plugin).await,
            Command::Validate { dirs } => inspect::validate(&dirs).await,
            Command::New { name, dir } => new::new(&name, &dir),
            Command::Build(args) => build::build(&args),
            Command::Demo => run::demo().await,
        }
    });
    ExitCode::from(code)
}
