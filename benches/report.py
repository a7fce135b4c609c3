"""Turn the newest benches/results/*-engines.json into a plot and the engines
table, with latencies, ratios and the binding overhead, in docs/benchmarks.md
(between the bench-full-table markers). Run by `make bench` with the peers'
venv, which has matplotlib. With ``--matrix``, the newest *-matrix.json
(`make bench-matrix`, which runs this itself) as the matrix table, the
README's speed section and docs/benchmarks.md's (between the bench-matrix
markers in each).

    python benches/report.py [--no-plot] [RESULTS.json]
    python benches/report.py --matrix [RESULTS.json]

The newest results file is the one with the latest date in its name
(<date>-<host>-engines.json); on the same date, the one written last.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benches" / "results"
README = REPO / "README.md"
BENCHMARKS = REPO / "docs" / "benchmarks.md"
FULL_START, FULL_END = "<!-- bench-full-table:start -->", "<!-- bench-full-table:end -->"
MATRIX_START, MATRIX_END = "<!-- bench-matrix:start -->", "<!-- bench-matrix:end -->"
NAMES = {
    "mistralvllm": "mistralvllm (GGUF)",
    "mistralvllm-no-prefix-cache": "mistralvllm (GGUF, prefix cache off)",
    "mistralvllm-plain-topology": "mistralvllm (plain + seed topology)",
    "mistralrs": "PyPI mistralrs",
    "llama-cpp-python": "llama-cpp-python",
}


def plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    for row in report["engines"]:
        clients = [c["clients"] for c in row["concurrency"]]
        rates = [c["aggregate_tok_s"] for c in row["concurrency"]]
        label = NAMES.get(row["engine"], row["engine"]) + (" (serialized)" if row["serialized"] else "")
        axes.plot(clients, rates, marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.set_xticks(
        [c["clients"] for c in report["engines"][0]["concurrency"]], labels=[str(c["clients"]) for c in report["engines"][0]["concurrency"]]
    )
    axes.set_xlabel("concurrent chats")
    axes.set_ylabel("aggregate tok/s")
    axes.set_title(f"{report['model']}, {report['threads']} threads, {report['host']}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def link(path: Path, page: Path) -> str:
    """A relative Markdown link to `path` from the page `page`."""
    return f"[`{path.name}`]({os.path.relpath(path, page.parent)})"


def table(report: dict, results: Path, png: Path, page: Path) -> str:
    lines = [
        f"Measured {report['date']} on `{report['host']}` ({report['threads']} threads), {link(results, page)}; "
        f"plot: {link(png, page)}. Medians of {report['repetitions']}; "
        f"decode = {report['decode_tokens']} new tokens; prompt = {report['long_prompt_tokens']} tokens; "
        f"roofline = {report['memory_bandwidth_gib_s']:.1f} GiB/s copy bandwidth / {report['bytes_per_token'] / 2**20:.0f} MiB of weights "
        f"= {report['roofline_decode_tok_s']:.0f} tok/s; fidelity = prompts of {len(report['fidelity_prompts'])} whose first "
        f"{report['fidelity_tokens']} greedy tokens match llama.cpp's.",
        "",
        "| engine | load | decode tok/s | % of roofline | TTFT | prompt tok/s | 8 chats, tok/s | 8 chats, median latency | peak RSS | fidelity |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["engines"]:
        eight = next(c for c in row["concurrency"] if c["clients"] == 8)
        roofline = f"{100 * row['decode_fraction_of_roofline']:.0f}%" if "decode_fraction_of_roofline" in row else "-"
        serialized = " (serialized)" if row["serialized"] else ""
        lines.append(
            f"| {NAMES.get(row['engine'], row['engine'])} | {row['load_s']:.2f} s | {row['decode_tok_s']['median']:.1f} | {roofline} "
            f"| {row['long_prompt_ttft_s']['median']:.2f} s | {row['prompt_tok_s_median']:.0f} | {eight['aggregate_tok_s']:.1f}{serialized} "
            f"| {eight['latency_median_s']:.1f} s | {row['peak_rss_mib']:.0f} MiB "
            f"| {row.get('fidelity_matches_llamacpp', '-')}/{len(report['fidelity_prompts'])} |"
        )
    lines.append("")
    ratios = "; ".join(
        f"vs {NAMES.get(peer, peer)}: " + ", ".join(f"{metric} {value:.2f}×" for metric, value in values.items())
        for peer, values in report["mistralvllm_over_peer"].items()
    )
    lines.append(f"Ratios, mistralvllm (GGUF) / peer — {ratios}.")
    if scaling := report.get("aggregate_8_over_1"):
        lines += [
            "",
            "8 chats at once against one chat (aggregate tok/s): " + ", ".join(f"{NAMES.get(e, e)} {v:.2f}×" for e, v in scaling.items()) + ".",
        ]
    clients = [c["clients"] for c in report["engines"][0]["concurrency"]]
    lines += [
        "",
        "Latency per chat (64 tokens), median / max, by chats at once:",
        "",
        "| engine | " + " | ".join(str(n) for n in clients) + " |",
        "|---|" + "---|" * len(clients),
    ]
    for row in report["engines"]:
        cells = " | ".join(f"{c['latency_median_s']:.1f} / {c['latency_max_s']:.1f} s" for c in row["concurrency"])
        lines.append(f"| {NAMES.get(row['engine'], row['engine'])}{' (serialized)' if row['serialized'] else ''} | {cells} |")
    if binding := report.get("binding_overhead"):
        lines += [
            "",
            f"Binding overhead (best runs): mistral.rs driven from Rust (`rust/benches/direct.rs`, same loader and request) decodes "
            f"{binding['direct_decode_tok_s']:.1f} tok/s, through `Session` from Python {binding['session_decode_tok_s']:.1f}: "
            f"{binding['overhead_ms_per_token']:.3f} ms per token, {100 * binding['overhead_fraction_of_token_time']:.1f}% of a token's time — "
            f"two runs minutes apart, so the difference carries this machine's run-to-run spread (10-20% on a VM). What the binding "
            f"and Python cost is measured directly as the CPU time of the thread that reads the stream: "
            f"{binding['caller_cpu_ms_per_token']:.3f} ms per token, "
            f"{100 * binding['caller_cpu_fraction_of_token_time']:.2f}% of a token's time.",
        ]
    return "\n".join(lines)


def ratio(found: dict, key: str, percent: bool = False) -> str:
    """One ratio of a matrix cell, or a dash where a figure is missing."""
    if key not in found:
        return "-"
    return f"{100 * found[key]:.0f}%" if percent else f"{found[key]:.2f}×"


def matrix_table(report: dict, results: Path, page: Path) -> str:
    """The bench matrix: one line per cell, ours over llama.cpp's own tools."""
    chats = report["chats"]
    lines = [
        f"Measured {report['date']} on `{report['host']}` ({report['threads']} threads, copy bandwidth "
        f"{report['copy_bandwidth_gib_s']:.1f} GiB/s), {link(results, page)}. Ours over llama.cpp: prompt and decode against "
        f"llama-bench pp{report['prompt_tokens']} / tg{report['decode_tokens']}, {chats} chats of {report['chat_tokens']} tokens "
        f"through `mistralvllm serve` against `llama-server -np {chats}`, peak RSS of each process (ours with the Python "
        f"interpreter); {chats}/1 is our {chats} chats over our one chat (llama-server's in brackets); roofline is our decode "
        "over the copy bandwidth divided by the file's bytes.",
        "",
        f"| model | type | MiB | prompt | decode | {chats} chats | {chats}/1 | peak RSS | roofline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        found = cell["ratios"]
        peer = f" ({found[f'peer_{chats}_chats_over_one']:.2f}×)" if f"peer_{chats}_chats_over_one" in found else ""
        shape = report["shapes"].get(cell["shape"], {}).get("like", "") or cell["shape"]
        lines.append(
            f"| {cell['shape']} ({shape}) | {cell['type']} | {cell['file_mib']:.0f} | {ratio(found, 'prompt_tok_s')} "
            f"| {ratio(found, 'decode_tok_s')} | {ratio(found, f'{chats}_chats')} | {ratio(found, f'{chats}_chats_over_one')}{peer} "
            f"| {ratio(found, 'peak_rss')} | {ratio(found, 'roofline_share', percent=True)} |"
        )
    for merge in report.get("remeasured", []):
        # The README is a user guide: which rows and when; the why is run history, kept on the benchmarks page.
        why = f" Why: {merge['note']}" if page == BENCHMARKS else ""
        lines += [
            "",
            f"Measured again {merge['date']} (copy bandwidth {merge['copy_bandwidth_gib_s']:.1f} GiB/s, which sets those "
            f"rows' roofline): {', '.join(merge['cells'])}.{why}",
        ]
    for check in report.get("greedy_agreement", []):
        lines += [
            "",
            f"{check['like']} (real weights): the same first greedy tokens as llama-server on {check['same']} of {len(check['prompts'])} prompts.",
        ]
    return "\n".join(lines)


def newest_matrix() -> Path:
    """The matrix results with the latest date in their name; on one date, the last written."""
    return max(RESULTS.glob("*-matrix.json"), key=lambda p: (p.name[:10], p.stat().st_mtime))


def write_matrix_table(results: Path) -> None:
    """The matrix table of ``results`` into the README and docs/benchmarks.md."""
    report = json.loads(results.read_text())
    for page in (README, BENCHMARKS):
        write_between(page, MATRIX_START, MATRIX_END, matrix_table(report, results, page))
    print(f"wrote the matrix table of {results.name} in {README} and {BENCHMARKS}")


def newest_results() -> Path:
    """The engines results with the latest date in their name; on one date, the last written.
    Only the names engines.py writes (<date>-<host>-engines.json) are candidates."""
    return max(RESULTS.glob("*-engines.json"), key=lambda p: (p.name[:10], p.stat().st_mtime))


def write_between(page: Path, start: str, end: str, body: str) -> None:
    text = page.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{page}: the markers {start} / {end} are missing")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{start}\n{body}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description="The speed tables (README, docs/benchmarks.md) and plot from a results file.")
    parser.add_argument("results", nargs="?", type=Path, help="an engines results file (default: the newest)")
    parser.add_argument("--no-plot", action="store_true", help="write the tables only, leaving the plot as it is")
    parser.add_argument("--matrix", action="store_true", help="write the bench matrix's table from a matrix results file")
    args = parser.parse_args()
    if args.matrix:
        write_matrix_table(args.results.resolve() if args.results else newest_matrix())
        return
    results = args.results.resolve() if args.results else newest_results()
    report = json.loads(results.read_text())
    png = results.with_suffix(".png")
    if not args.no_plot:
        plot(report, png)
        print(f"wrote {png}")
    write_between(BENCHMARKS, FULL_START, FULL_END, table(report, results, png, BENCHMARKS))
    print(f"wrote the engines table in {BENCHMARKS}")


if __name__ == "__main__":
    main()
