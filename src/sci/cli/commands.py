"""The `sci` command tree (click): parse, call `sci.api`, render (SPEC §7).

The entry point is `sci.cli.main`, which takes the common `sci build` without importing click
and maps every error to its exit code and one line, for both paths.
"""

from __future__ import annotations

import sys

import click

import sci


def _ws():
    from sci.workspace import find_workspace

    return find_workspace()


def _print_json(data) -> None:
    from sci import canonical

    click.echo(canonical.dumps_text(data))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(sci.__version__, "-V", "--version", prog_name="sci", message="%(prog)s %(version)s")
def cli() -> None:
    """sci: a declarative, content-addressed pipeline runner for scientific work."""


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Nodes run at once (default: CPUs).")
@click.option("-k", "--keep-going", is_flag=True, help="Keep building what does not depend on a failed node.")
@click.option("-n", "--dry-run", is_flag=True, help="Show what would run; run nothing.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a parameter for this run.")
@click.option("--force", multiple=True, metavar="NODE", help="Run NODE (a node or step) even if cached.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--no-wait", is_flag=True, help="Fail at once if another sci holds the workspace lock.")
@click.option("--executor", default="local", show_default=True, help="Where nodes run: local, ray or slurm.")
@click.option("--address", metavar="HOST:PORT", help="Ray cluster (GCS) address for --executor ray (default: RAY_ADDRESS).")
@click.option("--executor-option", "executor_option", multiple=True, metavar="KEY=VALUE",
              help="An executor setting for this build (slurm: partition, account, qos, time, setup, options, "
                   "arrays, poll_s); wins over sci.yaml's executors: and config/executors.yaml.")
@click.option("--remote", "remote", metavar="NAME", help="Consult this remote store (default: remotes.default / SCI_REMOTE).")
@click.option("--no-remote", is_flag=True, help="Do not consult any remote store.")
@click.option("--remote-upload", is_flag=True, help="Push what this build produced to the remote.")
@click.option("-v", "--verbose", is_flag=True, help="Also list cached nodes.")
def build(targets, jobs, keep_going, dry_run, overrides, force, as_json, no_wait, executor, address, executor_option,
          remote, no_remote, remote_upload, verbose) -> None:
    """Build TARGETS (node names, step names or output paths; default: everything)."""
    from sci.cli.run import run_build

    run_build(targets, jobs=jobs, keep_going=keep_going, dry_run=dry_run, overrides=overrides, force=force,
              as_json=as_json, no_wait=no_wait, executor=executor, address=address, remote=remote,
              no_remote=no_remote, remote_upload=remote_upload, verbose=verbose, executor_option=executor_option)


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a parameter.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(targets, overrides, as_json) -> None:
    """For each node: up to date, or why it would run."""
    from sci import api
    from sci.cli import console

    rows = api.status(_ws(), list(targets), overrides=list(overrides))
    if as_json:
        _print_json({"nodes": [r.to_json() for r in rows]})
        return
    for line in console.status_lines(rows):
        click.echo(line)


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid", "json"]), default="text",
              show_default=True)
def dag(targets, fmt) -> None:
    """Print the graph."""
    from sci import api

    click.echo(api.dag(_ws(), list(targets), fmt))


@cli.command()
@click.option("--repair", is_flag=True, help="Delete bad objects so they are rebuilt or re-fetched.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def fsck(repair, as_json) -> None:
    """Verify every object in the store against its digest (exit 1 naming the bad ones)."""
    from sci import api
    from sci.errors import StoreError

    rep = api.fsck(_ws(), repair=repair)
    if as_json:
        _print_json(rep.to_json())
    for kind, name, problem in rep.bad:
        click.echo(f"  bad {kind} {name}: {problem}", err=True)
    for key, missing in rep.dangling:
        click.echo(f"  action {key} needs missing object {missing}", err=True)
    if rep.ok or (repair and rep.repaired):
        click.echo(f"sci: fsck checked {rep.checked} objects: "
                   + ("all sound" if rep.ok else f"repaired {rep.repaired}"), err=True)
        return
    first = rep.bad[0][1] if rep.bad else rep.dangling[0][0]
    raise StoreError(f"fsck found {len(rep.bad)} bad object(s) and {len(rep.dangling)} incomplete action result(s); "
                     f"first: {first}", hint="run `sci fsck --repair`, then `sci build` to rebuild what was dropped")


@cli.command()
@click.option("--keep-runs", type=click.IntRange(min=0), default=5, show_default=True,
              help="Also keep what the last N runs used.")
@click.option("-n", "--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def gc(keep_runs, dry_run, as_json) -> None:
    """Delete store objects that neither the current pipeline nor the last N runs need."""
    from sci import api

    rep = api.gc(_ws(), keep_runs=keep_runs, dry_run=dry_run)
    if as_json:
        _print_json(rep.to_json())
    elif dry_run:
        for kind, name, size in rep.deleted:
            click.echo(f"  would delete {kind} {name} ({size} bytes)")
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"sci: gc kept {rep.kept_actions} action results; {verb} {len(rep.deleted)} objects "
               f"({rep.bytes} bytes)", err=True)


@cli.command("repro-check")
@click.argument("target")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Nodes run at once (default: CPUs).")
@click.option("--seed", type=int, help="Replay under another root seed and report which outputs change.")
@click.option("--keep", is_flag=True, help="Keep the scratch workspace and store for inspection.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def repro_check(target, jobs, seed, keep, as_json) -> None:
    """Rebuild TARGET from scratch and prove its outputs match the record, bit for bit."""
    from sci import api
    from sci.cli import console
    from sci.errors import WorkFailed

    ws = _ws()
    rep = api.repro_check(ws, target, jobs=jobs, seed=seed, keep=keep, emit=console.reporter(quiet=True),
                          argv=["repro-check", *sys.argv[2:]])
    if as_json:
        _print_json(rep.to_json())
    for line in console.repro_lines(rep):
        click.echo(line, err=as_json)
    click.echo(f"sci: report in runs/{rep.run_id}/repro.json", err=True)
    if not rep.ok:
        bad = [v.node for v in rep.verdicts if v.status in ("mismatch", "env-drift") and (v.files or v.note)]
        raise WorkFailed(f"repro-check {target}: {len(bad)} node(s) do not reproduce; first: {bad[0]}",
                         hint="see the differences above; docs/determinism.md explains how to find the cause")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--require-gpu", is_flag=True, help="Exit non-zero unless a usable GPU is present.")
def doctor(as_json, require_gpu) -> None:
    """Report the environment: Python, packages, CPU, RAM, GPUs, driver, CUDA, store health."""
    from sci import api
    from sci import doctor as doc
    from sci.errors import UserError

    try:
        ws = _ws()
    except UserError:
        ws = None
    report = api.doctor(ws)
    if as_json:
        _print_json(report)
    else:
        for line in doc.render(report):
            click.echo(line)
    if require_gpu:
        doc.require_gpu(report)


@cli.command()
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), help="Write NAME.schema.json files here.")
@click.argument("name", required=False)
def schema(out_dir, name) -> None:
    """Print (or write) the JSON Schemas of ExperimentRequest, RunManifest, StepResult, Dossier."""
    from pathlib import Path

    from sci import api
    from sci.errors import UserError

    if out_dir:
        for p in api.schema(Path(out_dir))["written"]:
            click.echo(p)
        return
    schemas = api.schema()
    if name:
        if name not in schemas:
            raise UserError(f"no schema named {name!r}", hint=f"choose one of {', '.join(sorted(schemas))}")
        schemas = {name: schemas[name]}
    _print_json(schemas)


def _transfer(verb: str, targets, remote, jobs, as_json) -> dict:
    """Run `api.push` or `api.pull` with a progress bar on a terminal (nothing otherwise)."""
    from sci import api

    progress = stop = None
    if sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task(verb, total=None)
        bar.start()
        progress, stop = (lambda event: bar.advance(task)), bar.stop
    try:
        out = getattr(api, verb)(_ws(), list(targets), remote=remote, jobs=jobs, progress=progress)
    finally:
        if stop:
            stop()
    if as_json:
        _print_json(out)
    return out


def _transfer_options(verb: str):
    def wrap(fn):
        fn = click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")(fn)
        fn = click.option("-j", "--jobs", type=click.IntRange(min=1), default=8, show_default=True,
                          help="Parallel transfers.")(fn)
        fn = click.option("--remote", metavar="NAME",
                          help=f"Remote to {verb} (default: remotes.default / SCI_REMOTE).")(fn)
        return click.argument("targets", nargs=-1)(fn)

    return wrap


@cli.command()
@_transfer_options("push to")
def push(targets, remote, jobs, as_json) -> None:
    """Copy the latest results of TARGETS (default: every node) and their objects to a remote."""
    out = _transfer("push", targets, remote, jobs, as_json)
    click.echo(f"sci: pushed {out['pushed_actions']} results: {out['objects']} objects ({out['bytes']} bytes) sent, "
               f"{out['skipped']} already there" + (f"; not built: {', '.join(out['not_built'])}" if out["not_built"] else ""),
               err=True)


@cli.command()
@_transfer_options("pull from")
def pull(targets, remote, jobs, as_json) -> None:
    """Fetch the results of TARGETS' current keys (default: every node) and their objects."""
    out = _transfer("pull", targets, remote, jobs, as_json)
    click.echo(f"sci: pulled {len(out['pulled_nodes'])} results: {out['objects']} objects ({out['bytes']} bytes) "
               f"received, {out['skipped']} already here"
               + (f"; not on the remote: {', '.join(out['not_on_remote'])}" if out["not_on_remote"] else ""), err=True)


@cli.command()
@click.argument("target", required=False)
@click.option("--format", "fmt", type=click.Choice(["bibtex", "csl-json", "cff", "markdown"]), default="bibtex",
              show_default=True)
def cite(target, fmt) -> None:
    """How to cite TARGET (a dossier node; default: the pipeline's dossier), its digest as version."""
    from sci import api

    click.echo(api.cite(_ws(), target, fmt).rstrip("\n"))


@cli.command()
@click.argument("target")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="The .zip to write.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
def export(target, out, as_json) -> None:
    """Seal TARGET's outputs, its closure's StepResults, the pipeline, params, code and environment."""
    from pathlib import Path

    from sci.evidence.bundle import export_bundle

    info = export_bundle(_ws(), target, Path(out))
    if as_json:
        _print_json(info)
    click.echo(f"sci: wrote {out}", err=True)


@cli.command("import")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite differing files in DIRECTORY.")
@click.option("--public-key", metavar="KEY", help="Require a valid signature by this Ed25519 public key.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
def import_(bundle, directory, force, public_key, as_json) -> None:
    """Verify every digest of BUNDLE, then unpack it into DIRECTORY (default: here) and its store."""
    from pathlib import Path

    from sci.evidence.bundle import import_bundle

    info = import_bundle(Path(directory or "."), Path(bundle), force=force, public_key=public_key)
    if as_json:
        _print_json(info)
    click.echo(f"sci: imported {bundle} into {directory or '.'}; check it with `sci repro-check {info.get('target', 'TARGET')}`",
               err=True)


@cli.command()
@click.argument("path", required=False, type=click.Path())
@click.option("--key", metavar="KEY", help="Ed25519 private key: a PEM file (default: SCI_SIGNING_KEY).")
@click.option("--out", metavar="SIG", type=click.Path(dir_okay=False), help="Where to write the signature.")
@click.option("--generate-key", "generate", metavar="PATH", type=click.Path(dir_okay=False),
              help="Create a new key pair at PATH (0600) and PATH.pub, then stop.")
@click.option("--force", is_flag=True, help="With --generate-key: overwrite an existing key.")
def sign(path, key, out, generate, force) -> None:
    """Sign a dossier directory or a bundle's manifest (Ed25519, detached SIGNATURE.json)."""
    from pathlib import Path

    from sci.evidence import signing
    from sci.errors import UserError

    if generate:
        signing.generate_key(Path(generate), force=force)
        click.echo(f"sci: wrote {generate} and {generate}.pub", err=True)
        return
    if not path:
        raise UserError("sign needs a PATH (a dossier directory or a bundle)", hint="e.g. sci sign dossier/ --key signer.pem")
    written = signing.sign(Path(path), key, out=Path(out) if out else None)
    click.echo(f"sci: wrote {written}", err=True)


@cli.command()
@click.argument("path", type=click.Path())
@click.option("--public-key", metavar="KEY", help="Trust only signatures by this key (PEM file).")
@click.option("--signature", metavar="SIG", type=click.Path(dir_okay=False), help="The signature file, if not beside PATH.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
def verify(path, public_key, signature, as_json) -> None:
    """Check every digest and the signature of a dossier or bundle (exit 1 naming what changed)."""
    from pathlib import Path

    from sci.evidence import signing

    info = signing.verify(Path(path), public_key, signature=Path(signature) if signature else None)
    if as_json:
        _print_json(info)
    click.echo(f"sci: {path} verified" + ("" if info.get("trusted") else " (signature valid, signer not pinned: "
                                                                         "pass --public-key to trust a key)"), err=True)


def main() -> None:
    """The whole command tree, with click's own errors mapped; the rest as `sci.cli` maps them."""
    from sci.cli.run import guarded

    def call() -> None:
        try:
            cli.main(standalone_mode=False)
        except click.exceptions.Abort:
            click.echo("sci: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)

    guarded(call)


if __name__ == "__main__":
    main()
