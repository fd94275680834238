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
    from sci.cli.run import run_status

    run_status(targets, overrides=overrides, as_json=as_json)


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid", "json"]), default="text",
              show_default=True)
def dag(targets, fmt) -> None:
    """Print the graph."""
    from sci import api

    click.echo(api.dag(_ws(), list(targets), fmt))


@cli.command()
@click.option("-n", "--number", "limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="Show the N newest runs (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def runs(limit, as_json) -> None:
    """The recorded runs, newest first: id, command, overrides, counts, duration, headline metrics."""
    from sci.cli import console
    from sci.records import history

    ws = _ws()
    found = history.list_runs(ws)
    shown = found[:limit] if limit else found
    if as_json:
        _print_json({"runs": [history.to_json(r) for r in shown], "total": len(found)})
        return
    for line in console.run_lines(shown):
        click.echo(line)
    if len(shown) < len(found):
        click.echo(f"sci: {len(shown)} of {len(found)} runs shown; `sci runs -n 0` lists all", err=True)
    elif not found:
        click.echo("sci: no runs recorded yet; `sci build` records one", err=True)


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--runs", "run_refs", multiple=True, metavar="RUN",
              help="One row per run: an id, a unique prefix of one, or ~N (N before the latest). Repeatable.")
@click.option("--all-runs", is_flag=True, help="One row per recorded build, newest first.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "md"]), default="table",
              show_default=True)
@click.option("--only-changed", is_flag=True, help="Drop parameter and metric columns that are the same in every row.")
@click.option("--sort", "sort_by", metavar="METRIC", help="Order rows by METRIC, ascending (-METRIC: descending).")
def metrics(targets, run_refs, all_runs, fmt, only_changed, sort_by) -> None:
    """Metrics as a table: one row per node (sweep items and params as columns), or per run."""
    from sci.errors import UserError
    from sci.records import history, table

    ws = _ws()
    if run_refs and all_runs:
        raise UserError("--runs and --all-runs exclude each other", hint="give one of them")
    if run_refs or all_runs:
        found = history.complete(history.list_runs(ws, detail=True))
        if all_runs:
            chosen = [r for r in found if r.get("kind") == "build"]
        else:
            refs = [ref for arg in run_refs for ref in arg.split()]  # `--runs "A B"` works too
            chosen = [history.resolve(found, ref) for ref in refs]
        tab = table.run_table(ws, list(targets), chosen)
    else:
        tab = table.node_table(ws, list(targets))
    if only_changed:
        tab = table.only_changed(tab)
    if sort_by:
        tab = table.sort_rows(tab, sort_by)
    for note in tab.notes:
        click.echo(f"sci: {note}", err=True)
    if tab.size or fmt == "json":
        click.echo(table.render(tab, fmt))


@cli.command()
@click.argument("run_a", required=False)
@click.argument("run_b", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def diff(run_a, run_b, as_json) -> None:
    """What changed between two runs (default: the last two builds): params, environment, keys, outputs, metrics.

    A run is named by its id, a unique prefix of it, or ~N (the N-th before the latest).
    With one run, it is compared with the latest build.
    """
    from sci.errors import UserError
    from sci.records import diff as diffs
    from sci.records import history, table

    ws = _ws()
    found = history.complete(history.list_runs(ws))
    builds = [r for r in found if r.get("kind") == "build"]
    if run_a is None:
        if len(builds) < 2:
            raise UserError(f"sci diff needs two recorded builds; {len(builds)} found",
                            hint="build again after an edit, or name two runs (`sci runs` lists them)")
        a, b = builds[1], builds[0]
    else:
        a = history.resolve(found, run_a)
        if run_b is None and not builds:
            raise UserError("no recorded build to compare with", hint="name two runs (`sci runs` lists them)")
        b = history.resolve(found, run_b) if run_b is not None else builds[0]
    man_a, man_b = history.read_manifest(ws.runs_dir, a["run"]), history.read_manifest(ws.runs_dir, b["run"])
    graph = table.graph_or_none(ws)  # for declaration order only: old runs stay comparable without it
    result = diffs.diff_runs(a, b, man_a, man_b, table.read_only_store(_store_root(ws)),
                             list(graph.nodes) if graph is not None else None)
    if as_json:
        _print_json(result.to_json())
        return
    for line in diffs.lines(result):
        click.echo(line)


def _store_root(ws):
    from sci import api

    return api._store_root_only(ws)


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
    scratch = rep.scratch
    if as_json:
        _print_json(rep.to_json())
    elif dry_run:
        for kind, name, size in rep.deleted:
            click.echo(f"  would delete {kind} {name} ({size} bytes)")
        for path, size in scratch:
            click.echo(f"  would delete scratch {path} ({size} bytes)")
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"sci: gc kept {rep.kept_actions} action results; {verb} {len(rep.deleted)} objects "
               f"({rep.bytes} bytes)" + (f" and {len(scratch)} repro-check scratch workspace(s) "
                                          f"({sum(b for _, b in scratch)} bytes)" if scratch else ""), err=True)


@cli.command()
@click.argument("node")
@click.option("--run", "run_id", metavar="ID", help="The execution in this run (a runs/ folder), not the latest.")
@click.option("--stdout", "only", flag_value="stdout", help="Only the captured stdout, as it was written.")
@click.option("--stderr", "only", flag_value="stderr", help="Only the captured stderr, as it was written.")
def log(node, run_id, only) -> None:
    """The captured stdout and stderr of NODE's latest execution (successful or not)."""
    from sci import api

    got = api.log(_ws(), node, run=run_id)
    if only:
        sys.stdout.buffer.write(got[only])
        sys.stdout.flush()
        return
    where = f"run {got['run']}" if got["run"] else "its last recorded result"
    for stream in ("stdout", "stderr"):
        data = got[stream]
        click.echo(f"== {node} {stream} ({got['status']}, {where}; {len(data)} bytes) ==")
        if data:
            sys.stdout.flush()
            sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
            sys.stdout.flush()


@cli.group()
def env() -> None:
    """The declared software environments (environments: in sci.yaml)."""


@env.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def env_list(as_json) -> None:
    """Each declared environment: kind, source, identity, and where it is prepared."""
    from sci import api

    rows = api.environments(_ws())
    if as_json:
        _print_json({"environments": rows})
        return
    if not rows:
        click.echo("no environments declared: steps run in the workspace's own (the caller's PATH)")
    for r in rows:
        where = r["prepared"] or "not prepared (sci env prepare)"
        python = f"python {r['python']}, " if r["python"] else ""
        what = ("image by digest" if r["kind"] == "container"
                else f"{len(r['packages'])} locked packages" if r["packages"] or not r["requirements"]
                else f"{len(r['requirements'])} requirements (no lock)")
        click.echo(f"  {r['name']:<12} {r['kind']:<9} {r['source']}  {python}{what}, "
                   f"identity {r['identity'][:12]}  {where}")


@env.command("prepare")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def env_prepare(names, as_json) -> None:
    """Prepare environments NAMES (default: every declared one) ahead of a build."""
    from sci import api

    rows = api.prepare_environments(_ws(), list(names))
    if as_json:
        _print_json({"environments": rows})
        return
    for r in rows:
        verb = f"prepared in {r['seconds']:.2f}s" if r["prepared"] else "ready"
        click.echo(f"  {r['name']:<12} {verb}  {r['directory']}")


@cli.command("repro-check")
@click.argument("target")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Nodes run at once (default: CPUs).")
@click.option("--seed", type=int, help="Replay under another root seed and report which outputs change.")
@click.option("--keep", is_flag=True, help="Keep the scratch workspace and store for inspection (path printed).")
@click.option("--diffoscope", is_flag=True, help="Also store diffoscope's report of each differing file "
                                                 "under runs/<id>/diffoscope/ (where diffoscope is installed).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def repro_check(target, jobs, seed, keep, diffoscope, as_json) -> None:
    """Rebuild TARGET's closure from scratch and prove its outputs match the record, bit for bit.

    Exit 0: every node matched (or, with --seed, the sensitivity report is complete). Exit 1:
    the verdict is `mismatch` (something does not reproduce) or `failed` (a rebuild failed, so
    the check is incomplete); the last line and repro.json's `verdict` say which.
    """
    from sci import api
    from sci.cli import console
    from sci.errors import WorkFailed

    ws = _ws()
    rep = api.repro_check(ws, target, jobs=jobs, seed=seed, keep=keep, diffoscope=diffoscope,
                          emit=console.reporter(quiet=True), argv=["repro-check", *sys.argv[2:]])
    if as_json:
        _print_json(rep.to_json())
    for line in console.repro_lines(rep):
        click.echo(line, err=as_json)
    if rep.kept:
        click.echo(f"sci: scratch workspace kept in {rep.kept} (`sci gc` removes it)", err=True)
    click.echo(f"sci: report in runs/{rep.run_id}/repro.json", err=True)
    if rep.verdict == "mismatch":
        bad = [v.node for v in rep.verdicts if v.differs]
        raise WorkFailed(f"repro-check {target}: NOT REPRODUCED: {len(bad)} node(s) differ from the record; "
                         f"first: {bad[0]}",
                         hint="see the differences above; docs/determinism.md explains how to find the cause")
    if rep.verdict == "failed":
        bad = [v for v in rep.verdicts if v.status == "failed"]
        first = f"{bad[0].node}: {bad[0].note}" if bad else rep.failure
        raise WorkFailed(f"repro-check {target}: CHECK FAILED: {len(bad)} node(s) could not be rebuilt, so "
                         f"reproduction is not established; first: {first}",
                         hint="fix the failure (the scratch holds only the target's closure: a step that reads an "
                              "undeclared file fails there), then run repro-check again; --keep keeps the scratch")
    click.echo(f"sci: repro-check {target}: " + ("sensitivity report complete" if rep.verdict == "sensitivity"
                                                else f"REPRODUCED: {len(rep.verdicts)} node(s) checked"), err=True)


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
@click.option("--format", "fmt", type=click.Choice(["bundle", "ro-crate", "prov"]), default="bundle", show_default=True,
              help="bundle: a sealed zip (docs/bundles.md); ro-crate: a Workflow Run RO-Crate directory (Provenance "
                   "Run Crate); prov: W3C PROV-JSON (docs/provenance.md).")
@click.option("-o", "--out", "out", type=click.Path(), help="Where to write: the .zip (bundle, required), the crate "
              "directory, or the PROV-JSON file (default for both: under runs/<run_id>/ of the run that built TARGET).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
def export(target, fmt, out, as_json) -> None:
    """Export TARGET's results: a sealed bundle, or its run as RO-Crate or W3C PROV."""
    from pathlib import Path

    if fmt == "bundle":
        from sci.evidence.bundle import export_bundle

        if not out:
            raise click.UsageError("--format bundle needs -o FILE.zip")
        info = export_bundle(_ws(), target, Path(out))
        if as_json:
            _print_json(info)
        click.echo(f"sci: wrote {out}", err=True)
        return
    from sci import api

    info = api.export_provenance(_ws(), target, fmt, Path(out) if out else None)
    if as_json:
        _print_json(info)
    else:
        click.echo(info["path"])
    click.echo(f"sci: wrote {info['written']} ({info['nodes']} nodes, {info['files']} files described, "
               f"{info['included']} included)", err=True)


@cli.command("import")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite differing files in DIRECTORY.")
@click.option("--trust", "trust", multiple=True, metavar="KEYFILE",
              help="Admit bundles signed by this Ed25519 public key (repeatable; also SCI_TRUSTED_KEYS).")
@click.option("--public-key", "public_key", metavar="KEYFILE", help="Same as --trust (one key).")
@click.option("--unsigned", is_flag=True, help="Import even without a trusted signature (you give up knowing who made it).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary on stdout.")
def import_(bundle, directory, force, trust, public_key, unsigned, as_json) -> None:
    """Verify BUNDLE (a trusted signature, every digest, every object), then unpack it into
    DIRECTORY (default: here) and its store."""
    from pathlib import Path

    from sci.evidence.bundle import import_bundle

    info = import_bundle(Path(directory or "."), Path(bundle), force=force, trust=trust, unsigned=unsigned,
                         public_key=public_key)
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
@click.option("--public-key", metavar="KEY", help="Trust only signatures by this key (a PEM file, or base64 of the raw key).")
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
