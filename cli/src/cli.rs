//! The command line of `vitastor-cli` and `vitastor-rm`, and the dispatch to the command
//! modules.
//!
//! # What this module owns
//! - The clap definitions of the top level (commands, shared options) and the process
//!   edge: usage errors and command errors both become one line on stderr and exit status 1
//!   (`--help` and `--version` exit 0).
//!
//! # What it must never do
//! - Implement a command: each lives in its module.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

use crate::error::Result;
use crate::images::{self, CreateArgs, LsArgs, ModifyArgs, RmArgs, RmDataArgs};
use crate::layers::{self, FlattenArgs, MergeDataArgs, SnapCreateArgs};
use crate::options::Common;
use crate::osds::{self, ModifyOsdArgs, RmOsdArgs};
use crate::pools::{self, CreatePoolArgs, ModifyPoolArgs, RmPoolArgs};
use crate::status::{self, PgListArgs};

/// `vitastor-cli`.
#[derive(Debug, Parser)]
#[command(
    name = "vitastor-cli",
    version,
    about = "Administer a Vitastor cluster: images, pools, OSDs, status",
    rename_all = "snake_case"
)]
pub struct Cli {
    #[command(flatten)]
    common: Common,
    /// Print JSON instead of human-readable tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[command(rename_all = "kebab-case")]
enum Command {
    /// Cluster summary: monitor, OSDs up, space, PG states.
    Status,
    /// Space per pool.
    Df,
    /// List images.
    Ls(LsArgs),
    /// Create an image, a clone (--parent) or a snapshot (--snapshot).
    Create(CreateArgs),
    /// Snapshot an image: IMAGE@SNAP becomes read-only, IMAGE a new layer over it.
    SnapCreate(SnapCreateArgs),
    /// Copy into a clone the data it lacks from its parents, then drop the parents.
    Flatten(FlattenArgs),
    /// Copy into TO the data it lacks from FROM (a layer below it); metadata unchanged.
    MergeData(MergeDataArgs),
    /// Rename, resize or change the read-only flag of an image.
    Modify(ModifyArgs),
    /// Remove images: their data, then their metadata.
    Rm(RmArgs),
    /// Remove the data of an inode (pool + inode number), keeping any metadata.
    RmData(RmDataArgs),
    /// Create a pool.
    CreatePool(CreatePoolArgs),
    /// Change a pool's settings.
    ModifyPool(ModifyPoolArgs),
    /// Remove a pool.
    RmPool(RmPoolArgs),
    /// List pools.
    #[command(alias = "ls-pool")]
    LsPools,
    /// List PGs, optionally only those in some states.
    PgList(PgListArgs),
    /// Show the placement tree with its OSDs.
    OsdTree,
    /// List OSDs.
    #[command(alias = "ls-osds")]
    LsOsd,
    /// Change an OSD's tags, reweight or noout flag.
    ModifyOsd(ModifyOsdArgs),
    /// Remove OSDs from the cluster configuration.
    RmOsd(RmOsdArgs),
}

/// `vitastor-rm`: removes an inode's data.
#[derive(Debug, Parser)]
#[command(
    name = "vitastor-rm",
    version,
    about = "Remove the data of an inode: its objects are listed on the OSDs (every PG of the \
             pool) and all are deleted, whatever the inode's size; with --size, every object \
             below it is deleted instead, without listing.",
    rename_all = "snake_case"
)]
pub struct RmCli {
    #[command(flatten)]
    common: Common,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    args: RmDataArgs,
}

fn run_cli(cli: Cli) -> Result<()> {
    let resolved = cli.common.resolve()?;
    let mut etcd = resolved.etcd()?;
    let etcd = &mut etcd;
    let json = cli.json;
    match &cli.command {
        Command::Status => status::status(etcd, json),
        Command::Df => pools::df(etcd, json),
        Command::Ls(a) => images::ls(etcd, a, json),
        Command::Create(a) => images::create(etcd, a, json),
        Command::SnapCreate(a) => layers::snap_create(etcd, &a.name, json),
        Command::Flatten(a) => layers::flatten(etcd, &resolved, a, json),
        Command::MergeData(a) => layers::merge_data(etcd, &resolved, a, json),
        Command::Modify(a) => images::modify(etcd, &resolved, a, json),
        Command::Rm(a) => images::rm(etcd, &resolved, a, json),
        Command::RmData(a) => images::rm_data(etcd, &resolved, a, json),
        Command::CreatePool(a) => pools::create_pool(etcd, a, json),
        Command::ModifyPool(a) => pools::modify_pool(etcd, a, json),
        Command::RmPool(a) => pools::rm_pool(etcd, a, json),
        Command::LsPools => pools::ls_pools(etcd, json),
        Command::PgList(a) => status::pg_list(etcd, a, json),
        Command::OsdTree => osds::osd_tree(etcd, json),
        Command::LsOsd => osds::ls_osd(etcd, json),
        Command::ModifyOsd(a) => osds::modify_osd(etcd, a, json),
        Command::RmOsd(a) => osds::rm_osd(etcd, a, json),
    }
}

fn run_rm(cli: RmCli) -> Result<()> {
    let resolved = cli.common.resolve()?;
    let mut etcd = resolved.etcd()?;
    images::rm_data(&mut etcd, &resolved, &cli.args, cli.json)
}

/// Entry point of `vitastor-cli`.
pub fn main_cli() -> ExitCode {
    finish("vitastor-cli", Cli::try_parse().map(run_cli))
}

/// Entry point of `vitastor-rm`.
pub fn main_rm() -> ExitCode {
    finish("vitastor-rm", RmCli::try_parse().map(run_rm))
}

fn finish(program: &str, outcome: std::result::Result<Result<()>, clap::Error>) -> ExitCode {
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            // clap's first line names the problem; the rest is usage, which --help shows.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("{program}: {first} (see --help)");
            ExitCode::FAILURE
        }
    }
}
