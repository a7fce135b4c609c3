"""Edit our patch series as git history instead of by hand.

``patches/<crate>-<version>/NNNN-<slug>.patch`` (applied in name order by
scripts/patch_crates.py) are written by this script, not by hand:

``edit [CRATE...]``
    lays each series out as a git repository, ``patched-edit/<crate>/``
    (git-ignored): its first commit is the published source (tag
    ``upstream``), then one commit per patch whose message is the patch's
    header. Change it there with git (commit --fixup, rebase -i, reword).
``export [CRATE...]``
    writes each repository's commits after ``upstream`` back to
    ``patches/<crate>-<version>/``: one file per commit, its header the commit
    message, its name the commit's place and its first line as a slug.
``upstream CRATE VERSION``
    puts another published release under a laid-out series: a commit of its
    source on top of the old ``upstream``, then ``git rebase`` of the patches
    onto it. Cargo.lock must pin VERSION first; its checksum is the one checked.

Export followed by edit (and edit followed by export) gives back the same
files byte for byte (tests/test_patch_series.py). The diff is git's, with
fixed options, less git's own lines (``diff --git``, ``index``, modes), so
that ``patch -p1 --fuzz=0`` applies it as patch_crates.py does. Standard
library only; the published crates are found, checked and unpacked by
scripts/patch_crates.py's own functions. patches/README.md has the workflow.

Usage: python3 scripts/patch_series.py [--root DIR] edit|export [CRATE...]
       python3 scripts/patch_series.py [--root DIR] upstream CRATE VERSION
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import patch_crates
from patch_crates import CRATE_DIR, PatchError

EDIT_DIR = "patched-edit"
UPSTREAM = "upstream"
BRANCH = "series"
SLUG_MAX = 52
# Identity of the commits this script makes (your own git identity makes yours).
IDENTITY = {
    "GIT_AUTHOR_NAME": "patch_series",
    "GIT_AUTHOR_EMAIL": "patch_series@localhost",
    "GIT_COMMITTER_NAME": "patch_series",
    "GIT_COMMITTER_EMAIL": "patch_series@localhost",
}
# Git's settings that would change the diff's bytes, fixed whatever the user's config says.
DIFF_CONFIG = [
    "-c", "core.quotePath=false", "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
    "-c", "diff.suppressBlankEmpty=false", "-c", "diff.relative=false",
]  # fmt: skip
DIFF_OPTIONS = [
    "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", "--unified=3", "--inter-hunk-context=0",
    "--diff-algorithm=myers", "--indent-heuristic", "--src-prefix=a/", "--dst-prefix=b/", "-O/dev/null",
]  # fmt: skip
# Checked-out bytes are the committed bytes (no end-of-line or filter
# conversion, whatever a crate's own .gitattributes says); text diffs throughout.
ATTRIBUTES = "* -text -eol -filter -ident -working-tree-encoding diff\n"
DIFF_START = re.compile(rb"^--- (?:a/|/dev/null)[^\n]*\n\+\+\+ (?:b/|/dev/null)", re.MULTILINE)


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> bytes:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise PatchError(f"{repo}: git {' '.join(args)} failed:\n{result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def split_patch(text: bytes) -> tuple[bytes, bytes]:
    """A patch file's header (trailing blank lines dropped) and its diff."""
    match = DIFF_START.search(text)
    if match is None:
        raise PatchError("no '--- a/...' / '+++ b/...' diff in it")
    return text[: match.start()].rstrip(b"\n"), text[match.start() :]


def join_patch(header: bytes, diff: bytes) -> bytes:
    """The one form export writes: the header, one blank line, the diff."""
    return header.rstrip(b"\n") + b"\n\n" + diff


def slug(message: bytes) -> str:
    """The file name's part after NNNN-: the message's first line, in words."""
    first = message.decode("utf-8", errors="replace").split("\n", 1)[0].lower()
    words = re.sub(r"[^a-z0-9_]+", "-", first).strip("-")
    if len(words) > SLUG_MAX:
        words = words[: SLUG_MAX + 1].rsplit("-", 1)[0] if "-" in words[:SLUG_MAX] else words[:SLUG_MAX]
    return words or "patch"


def digest(files: dict[str, bytes]) -> str:
    """One hash of a series' file names and contents."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def series(root: Path, crates: list[str]) -> list[tuple[str, str, Path]]:
    """(crate, version, patch directory) of patches/, or of the crates named."""
    found = []
    for patch_dir in sorted(p for p in (root / "patches").iterdir() if p.is_dir()):
        match = CRATE_DIR.match(patch_dir.name)
        if match is None:
            raise PatchError(f"{patch_dir}: expected a directory named <crate>-<version>, e.g. mistralrs-core-0.8.1")
        if not crates or match["name"] in crates or patch_dir.name in crates:
            found.append((match["name"], match["version"], patch_dir))
    missing = set(crates) - {c for n, v, _ in found for c in (n, f"{n}-{v}")}
    if missing:
        raise PatchError(f"{root / 'patches'}: no series for {', '.join(sorted(missing))}")
    return found


def _commit(repo: Path, message: bytes) -> None:
    _git(repo, "add", "--all", "--force")
    subprocess.run(
        ["git", "-C", str(repo), "-c", "commit.gpgSign=false", "commit", "--quiet", "--no-verify", "--cleanup=verbatim", "--file=-"],
        input=message.rstrip(b"\n") + b"\n",
        capture_output=True,
        env={**os.environ, **IDENTITY},
        check=True,
    )


def _published(root: Path, name: str, version: str, expected: str, into: Path) -> Path:
    """The published crate, checked against ``expected``, unpacked under ``into``."""
    data = patch_crates._crate_bytes(name, version, expected, patch_crates._download_dir())
    return patch_crates._unpack(data, name, version, into)


def _upstream_message(name: str, version: str, sha256: str) -> bytes:
    return f"{name} {version} as published on crates.io\n\nsha256 {sha256}\n".encode()


def lay_out(root: Path, name: str, version: str, patch_dir: Path) -> Path:
    """patched-edit/<crate>/: the published source, then one commit per patch."""
    repo = root / EDIT_DIR / name
    expected = patch_crates._expected_sha256(patch_dir, f"{name}-{version}.crate")
    patches = sorted(patch_dir.glob("*.patch"))
    (root / EDIT_DIR).mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root / EDIT_DIR, prefix=f".{name}-") as scratch:
        source = _published(root, name, version, expected, Path(scratch))
        _git(source, "init", "--quiet", f"--initial-branch={BRANCH}")
        (source / ".git" / "info").mkdir(exist_ok=True)
        (source / ".git" / "info" / "attributes").write_text(ATTRIBUTES)
        _commit(source, _upstream_message(name, version, expected))
        _git(source, "tag", UPSTREAM)
        for patch in patches:
            try:
                header, _ = split_patch(patch.read_bytes())
            except PatchError as e:
                raise PatchError(f"{patch}: {e}") from None
            if not header.strip():
                raise PatchError(f"{patch}: no header before its diff (what was wrong, the fix, its proof)")
            patch_crates._apply(patch, source, f"{name} {version}")
            _commit(source, header)
        for key, value in {"crate": name, "version": version, "sha256": expected, "origin": patch_dir.name}.items():
            _git(source, "config", f"mistralvllm.{key}", value)
        _git(source, "config", "mistralvllm.laidfrom", digest({p.name: p.read_bytes() for p in patches}))
        if repo.exists():
            shutil.rmtree(repo)
        source.rename(repo)
    return repo


def _config(repo: Path, key: str) -> str:
    value = _git(repo, "config", "--get", f"mistralvllm.{key}", check=False).decode().strip()
    if not value:
        raise PatchError(f"{repo}: no mistralvllm.{key} in its git config; not laid out by this script (make patches-edit)")
    return value


def _check_clean(repo: Path) -> None:
    git_dir = repo / ".git"
    if any((git_dir / d).exists() for d in ("rebase-merge", "rebase-apply", "MERGE_HEAD", "CHERRY_PICK_HEAD")):
        raise PatchError(f"{repo}: a rebase, merge or cherry-pick is in progress; finish it (git status) first")
    if _git(repo, "status", "--porcelain", "--untracked-files=all"):
        raise PatchError(f"{repo}: has changes not committed (git status); commit them (or git stash) first")


def _diff(repo: Path, old: str, new: str) -> bytes:
    """git's diff of two commits in our form: file headers and hunks only."""
    raw = _git(repo, *DIFF_CONFIG, "diff", *DIFF_OPTIONS, old, new, "--")
    out: list[bytes] = []
    has_hunks = True
    for line in raw.splitlines(keepends=True):
        if line.startswith(b"diff --git "):
            if not has_hunks:
                raise PatchError(f"{repo}: {new}: {out[-1].decode(errors='replace').strip()}: empty files cannot be patched")
            has_hunks = False
            out.append(line)  # dropped below; kept for the message above
            continue
        if line.startswith((b"index ", b"new file mode 100644", b"deleted file mode 100644")):
            continue
        if line.startswith((b"old mode", b"new mode", b"new file mode", b"deleted file mode", b"Binary files", b"GIT binary patch")):
            path = out[-1].decode(errors="replace").strip() if out else "?"
            raise PatchError(f"{repo}: {new}: {path}: {line.decode(errors='replace').strip()}: patch -p1 cannot carry it")
        if line.startswith(b"--- "):
            has_hunks = True
        out.append(line)
    if not has_hunks:
        raise PatchError(f"{repo}: {new}: {out[-1].decode(errors='replace').strip()}: empty files cannot be patched")
    return b"".join(line for line in out if not line.startswith(b"diff --git "))


def exported(repo: Path) -> dict[str, bytes]:
    """The series a laid-out repository holds: file name -> bytes."""
    if subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", UPSTREAM, "HEAD"], capture_output=True).returncode:
        raise PatchError(f"{repo}: HEAD is not on top of the tag {UPSTREAM} (the published source)")
    if _git(repo, "rev-list", "--merges", f"{UPSTREAM}..HEAD").strip():
        raise PatchError(f"{repo}: merge commits after {UPSTREAM}; a series is a line of commits (git rebase)")
    commits = _git(repo, "rev-list", "--reverse", f"{UPSTREAM}..HEAD").decode().split()
    files = {}
    for number, commit in enumerate(commits, 1):
        raw = _git(repo, "cat-file", "commit", commit)
        message = raw.split(b"\n\n", 1)[1] if b"\n\n" in raw else b""
        if not message.strip():
            raise PatchError(f"{repo}: commit {commit[:12]} has no message; it becomes the patch's header")
        diff = _diff(repo, f"{commit}^", commit)
        if not diff:
            subject = message.split(b"\n", 1)[0].decode(errors="replace")
            raise PatchError(f"{repo}: commit {commit[:12]} ({subject}) changes nothing; drop it (git rebase -i)")
        files[f"{number:04d}-{slug(message)}.patch"] = join_patch(message, diff)
    return files


def edit(root: Path, crates: list[str]) -> None:
    for name, version, patch_dir in series(root, crates):
        repo = root / EDIT_DIR / name
        current = {p.name: p.read_bytes() for p in patch_dir.glob("*.patch")}
        if (repo / ".git").is_dir():
            _check_clean(repo)
            held = exported(repo)
            if held == current and _config(repo, "version") == version:
                print(f"patch_series: {repo.relative_to(root)}: already holds {patch_dir.relative_to(root)}", file=sys.stderr)
                continue
            if digest(held) != _config(repo, "laidfrom"):
                raise PatchError(
                    f"{repo}: has commits that differ from {patch_dir}; write them there (make patches-export) "
                    "or remove the directory to lay the series out again"
                )
        elif repo.exists():
            raise PatchError(f"{repo}: exists but is not a git repository; remove it")
        lay_out(root, name, version, patch_dir)
        print(f"patch_series: {repo.relative_to(root)}: {name} {version} and {len(current)} patch(es) as commits", file=sys.stderr)


def export(root: Path, crates: list[str]) -> None:
    edit_root = root / EDIT_DIR
    repos = sorted(p for p in edit_root.iterdir() if (p / ".git").is_dir()) if edit_root.is_dir() else []
    if crates:
        unknown = set(crates) - {p.name for p in repos}
        if unknown:
            raise PatchError(f"{edit_root}: no repository for {', '.join(sorted(unknown))} (make patches-edit)")
        repos = [p for p in repos if p.name in crates]
    if not repos:
        raise PatchError(f"{edit_root}: nothing to export (make patches-edit first)")
    for repo in repos:
        _check_clean(repo)
        name, version, sha256 = _config(repo, "crate"), _config(repo, "version"), _config(repo, "sha256")
        files = exported(repo)
        out = root / "patches" / f"{name}-{version}"
        out.mkdir(parents=True, exist_ok=True)
        changed = 0
        for stale in sorted(set(p.name for p in out.glob("*.patch")) - set(files)):
            (out / stale).unlink()
            changed += 1
        for file_name, data in files.items():
            target = out / file_name
            if not target.is_file() or target.read_bytes() != data:
                target.write_bytes(data)
                changed += 1
        sums = f"{sha256}  {name}-{version}.crate\n".encode()
        if not (out / "SHA256SUMS").is_file() or (out / "SHA256SUMS").read_bytes() != sums:
            (out / "SHA256SUMS").write_bytes(sums)
        origin = _config(repo, "origin")
        if origin != out.name and (root / "patches" / origin).is_dir():
            shutil.rmtree(root / "patches" / origin)
            print(f"patch_series: removed patches/{origin} (the series is on {name} {version} now)", file=sys.stderr)
        _git(repo, "config", "mistralvllm.origin", out.name)
        _git(repo, "config", "mistralvllm.laidfrom", digest(files))
        print(f"patch_series: {out.relative_to(root)}: {len(files)} patch(es), {changed} file(s) written or removed", file=sys.stderr)


def _locked_checksum(lock_file: Path, name: str, version: str) -> str:
    text = lock_file.read_text()
    match = re.search(
        rf'\[\[package\]\]\nname = "{re.escape(name)}"\nversion = "{re.escape(version)}"\nsource = "[^"]*"\nchecksum = "([0-9a-f]{{64}})"', text
    )
    if match is None:
        raise PatchError(
            f"{lock_file}: pins no {name} {version} from a registry; bump it first "
            f"(Cargo.toml's requirement, then cargo update -p {name} --precise {version})"
        )
    return match[1]


def upstream(root: Path, name: str, version: str) -> None:
    repo = root / EDIT_DIR / name
    if not (repo / ".git").is_dir():
        raise PatchError(f"{repo}: no such repository (make patches-edit CRATES={name})")
    _check_clean(repo)
    sha256 = _locked_checksum(root / "Cargo.lock", name, version)
    old = _git(repo, "rev-parse", UPSTREAM).decode().strip()
    with tempfile.TemporaryDirectory(dir=root / EDIT_DIR, prefix=f".{name}-{version}-") as scratch:
        source = _published(root, name, version, sha256, Path(scratch))
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index"), "GIT_WORK_TREE": str(source), **IDENTITY}
        git_dir = ["--git-dir", str(repo / ".git")]
        _git(repo, *git_dir, "add", "--all", "--force", env=env)
        tree = _git(repo, *git_dir, "write-tree", env=env).decode().strip()
    message = _upstream_message(name, version, sha256)
    new = (
        subprocess.run(
            ["git", "-C", str(repo), "commit-tree", "--no-gpg-sign", tree, "-p", old, "-F", "-"],
            input=message,
            capture_output=True,
            env={**os.environ, **IDENTITY},
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    _git(repo, "tag", "--force", UPSTREAM, new)
    _git(repo, "config", "mistralvllm.version", version)
    _git(repo, "config", "mistralvllm.sha256", sha256)
    # The rebased commits keep their authors; a committer is needed even where git has no identity set.
    identity = {} if _git(repo, "config", "user.email", check=False).strip() else IDENTITY
    rebase = subprocess.run(["git", "-C", str(repo), "rebase", "--onto", new, old], capture_output=True, text=True, env={**os.environ, **identity})
    if rebase.returncode != 0:
        print(rebase.stdout + rebase.stderr, file=sys.stderr)
        print(
            f"patch_series: {repo.relative_to(root)}: the patches do not all apply to {name} {version}; resolve each "
            "conflict there (git status, edit, git add, git rebase --continue), then make patches-export",
            file=sys.stderr,
        )
        return
    print(f"patch_series: {repo.relative_to(root)}: the series is on {name} {version}; now make patches-export", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="the repository (default: this one)")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("edit", "export"):
        commands.add_parser(command).add_argument("crates", nargs="*", metavar="CRATE")
    moving = commands.add_parser("upstream")
    moving.add_argument("crate")
    moving.add_argument("version")
    args = parser.parse_args(argv)
    try:
        if args.command == "edit":
            edit(args.root, args.crates)
        elif args.command == "export":
            export(args.root, args.crates)
        else:
            upstream(args.root, args.crate, args.version)
    except PatchError as e:
        print(f"patch_series: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
