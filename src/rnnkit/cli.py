"""The ``rnnkit`` command.

    rnnkit train TASK [--flags]            train a task (flags from the task's Config)
    rnnkit train TASK --resume RUN [...]   continue a run where it stopped
    rnnkit sample RUN [--prime ...]        print a sample from a trained run
    rnnkit eval RUN --data DATA            score a trained run on other data
    rnnkit forecast RUN --data CSV [--horizon N] [--out FILE]
                                           forecast past the end of a series, as CSV
    rnnkit translate RUN ["text" ...]      translate each text (or each line of stdin)
    rnnkit data NAME OUT.tsv               write a parallel data set (numbers-en-es, bible-en-es)
    rnnkit data speech OUT_DIR --hours H [--kind digits|sentences|both]
                                           synthesise spoken WAVs and manifests with espeak-ng
    rnnkit classify RUN "text" | --file F [--out predictions.csv]
                                           label a text, or every text of a file with probabilities
    rnnkit caption RUN image.png [more.png ...]
                                           caption images (a features run: .npy rows)
    rnnkit transcribe RUN file.wav [more.wav ...] [--stream]
                                           speech to text (--stream: as the audio is read)
    rnnkit export RUN --format onnx|torchscript [--step] [--out DIR]
                                           the model for other runtimes (docs/export.md)

Each task in :data:`rnnkit.tasks.TASKS` gets its own ``train`` subcommand whose flags are
generated from its config dataclass; ``sample`` and ``eval`` find the task of a run from its
config.json, so later tasks slot in without touching this file's structure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

from rnnkit.data import CorpusError
from rnnkit.tasks import TASKS, load_task, restarted_config, resumed_config, task_of_run
from rnnkit.training import config as configuration
from rnnkit.training import heap
from rnnkit.training.trainer import NonFiniteLoss, limits_given


def add_train(commands) -> None:
    train = commands.add_parser("train", help="train a task")
    tasks = train.add_subparsers(dest="task", required=True, metavar="TASK")
    for name in TASKS:
        module = load_task(name)
        parser = tasks.add_parser(name, help=(module.__doc__ or "").splitlines()[0])
        configuration.add_arguments(parser, module.Config)
        parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory")


def add_sample(commands) -> None:
    sample = commands.add_parser("sample", help="print a sample from a trained run")
    sample.add_argument("run", help="run directory")
    sample.add_argument("--prime", default="", help="text to start from")
    sample.add_argument("--length", type=int, default=500, help="characters to generate")
    sample.add_argument("--temperature", type=float, default=0.8, help="0 takes the most likely")
    sample.add_argument("--top-k", type=int, default=0, help="sample among the k most likely")
    sample.add_argument("--seed", type=int, default=1, help="seed of the sampling")
    sample.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])


def add_eval(commands) -> None:
    evaluate = commands.add_parser("eval", help="score a trained run on a corpus")
    evaluate.add_argument("run", help="run directory")
    evaluate.add_argument("--data", required=True, help="file, directory, glob or corpus name")
    evaluate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def add_forecast(commands) -> None:
    forecast = commands.add_parser("forecast", help="forecast past the end of a series")
    forecast.add_argument("run", help="run directory of a forecast task")
    forecast.add_argument("--data", required=True, help="CSV file or built-in series name")
    forecast.add_argument("--horizon", type=int, default=0, help="steps (0: the trained one)")
    forecast.add_argument("--out", default="", help="CSV to write (default: RUN/forecast.csv)")
    forecast.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])


def add_translate(commands) -> None:
    translate = commands.add_parser("translate", help="translate text with a trained run")
    translate.add_argument("run", help="run directory of a translate task")
    translate.add_argument("text", nargs="*", help="sentences (none: one per line of stdin)")
    translate.add_argument("--beam", type=int, default=0, help="beam width (0: the run's)")
    translate.add_argument("--temperature", type=float, default=0.0, help="> 0: sample")
    translate.add_argument("--seed", type=int, default=1, help="seed of the sampling")
    translate.add_argument("--no-repeat-ngram", type=int, help="block repeated n-grams (0: off)")
    translate.add_argument("--heatmap", default="", help="PNG of the first sentence's attention")
    translate.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])


def add_data(commands) -> None:
    data = commands.add_parser("data", help="write a parallel data set as TSV, or speech")
    names = ["numbers-en-es", "bible-en-es", "speech", "fsdd"]
    data.add_argument("name", choices=names, help="data set (fsdd: manifests of a FSDD folder)")
    data.add_argument("out", help="TSV file to write (speech: a directory; fsdd: its folder)")
    data.add_argument("manifests", nargs="?", help="fsdd: the directory of the manifests")
    data.add_argument("--test-speakers", nargs="+", default=[], help="fsdd: the test speakers")
    data.add_argument("--val-speakers", nargs="*", default=[], help="fsdd: validation speakers")
    data.add_argument("--numbers", type=int, default=40_000, help="numbers-en-es: how many")
    data.add_argument("--seed", type=int, default=1, help="numbers-en-es, speech: seed")
    data.add_argument("--hours", type=float, default=0.1, help="speech: hours of audio")
    data.add_argument("--kind", choices=["digits", "sentences", "both"], default="digits")


def add_classify(commands) -> None:
    classify = commands.add_parser("classify", help="label texts with a trained classify run")
    classify.add_argument("run", help="run directory of a classify task")
    classify.add_argument("text", nargs="?", default="", help="a text to label")
    classify.add_argument("--file", default="", help="CSV/TSV (the run's text column) or .txt")
    classify.add_argument("--out", default="predictions.csv", help="CSV of predictions to write")
    classify.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])


def add_caption(commands) -> None:
    caption = commands.add_parser("caption", help="caption images with a trained caption run")
    caption.add_argument("run", help="run directory of a caption task")
    caption.add_argument("images", nargs="+", help="image files (a features run: .npy files)")
    caption.add_argument("--beam", type=int, default=0, help="beam width (0: the run's)")
    caption.add_argument("--temperature", type=float, default=0.0, help="> 0: sample")
    caption.add_argument("--seed", type=int, default=1, help="seed of the sampling")
    caption.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])


def add_transcribe(commands) -> None:
    transcribe = commands.add_parser("transcribe", help="speech to text with a speech run")
    transcribe.add_argument("run", help="run directory of a speech task")
    transcribe.add_argument("files", nargs="+", help="WAV files (any rate, mono or not)")
    transcribe.add_argument("--stream", action="store_true", help="print text as audio is read")
    transcribe.add_argument("--chunk-ms", type=float, default=100.0, help="--stream: chunk size")
    transcribe.add_argument("--beam", type=int, default=0, help="0: the run's; 1: greedy")
    transcribe.add_argument("--lm", default="", help="charlm run to fuse (default: the run's)")
    transcribe.add_argument("--lm-weight", type=float, default=None, help="(default: the run's)")
    transcribe.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])


def add_export(commands) -> None:
    export = commands.add_parser("export", help="write a run's model as ONNX or TorchScript")
    export.add_argument("run", help="run directory")
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    export.add_argument(
        "--step",
        action="store_true",
        help="also the one-step model (translate, caption: the encoder and a decoder step)",
    )
    export.add_argument("--out", default="", help="directory to write (default: RUN/export)")


def add_tools(commands) -> None:
    """Commands that look inside models; bench and gradflow keep their own flags."""
    for name, text in (
        ("bench", "speed against torch.nn ('bench memory', 'bench distributed')"),
        ("gradflow", "plot vanishing and exploding gradients through time"),
    ):
        tool = commands.add_parser(name, help=text, add_help=False)
        tool.add_argument("rest", nargs=argparse.REMAINDER)
    inspect = commands.add_parser("inspect", help="an HTML page of a char model's units and gates")
    inspect.add_argument("run", help="run directory of a charlm run")
    inspect.add_argument("--text", required=True, help="text file to run the model over")
    inspect.add_argument("--out", default="report.html", help="where to write the page")
    inspect.add_argument("--max-chars", type=int, default=2000, help="characters of the text")
    summary = commands.add_parser("summary", help="weights, MACs and training memory of a run")
    summary.add_argument("run", help="run directory of a charlm run")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="rnnkit", description="Recurrent networks, trained.")
    commands = main.add_subparsers(dest="command", required=True)
    add_train(commands)
    add_sample(commands)
    add_eval(commands)
    add_forecast(commands)
    add_translate(commands)
    add_data(commands)
    add_classify(commands)
    add_caption(commands)
    add_transcribe(commands)
    add_export(commands)
    add_tools(commands)
    return main


def run_train(args) -> int:
    module = load_task(args.task)
    heap.keep_freed_blocks()  # the command's own process: each step reuses the last one's memory
    flags = limits_given(configuration.given(args, module.Config))
    resumed = args.resume and resumed_config(module, args.resume, flags)
    resumed = resumed or restarted_config(module, flags)  # torchrun restarted the group
    config = resumed or configuration.from_dict(module.Config, flags)
    if getattr(config, "threads", 0):  # process-wide, so the command's to set
        torch.set_num_threads(config.threads)
    trainer = module.train(config, resume=bool(resumed))
    unit = " nats/char" if args.task == "charlm" else ""
    if trainer.world.rank == 0:  # under torchrun, one process reports for all
        print(f"run: {config.out} (best val_loss {trainer.best:.4f}{unit})")
    return 130 if trainer.interrupted else 0


def run_sample(args) -> int:
    module = task_of_run(args.run)
    module.sample(
        Path(args.run),
        args.prime,
        args.length,
        args.temperature,
        args.top_k,
        args.seed,
        args.device,
    )
    return 0


def run_eval(args) -> int:
    r = task_of_run(args.run).evaluate(Path(args.run), args.data, args.device)
    if "bpc" not in r:  # tasks other than charlm: every metric, in the order returned
        print(
            " | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
        )
        return 0
    print(
        f"loss {r['loss']:.4f} nats/char | {r['bpc']:.4f} bits/char | "
        f"perplexity {r['perplexity']:.3f} | {r['characters']} characters, "
        f"{r['unknown']} unknown"
    )
    return 0


def run_forecast(args) -> int:
    module = task_of_run(args.run)
    if not hasattr(module, "predict"):
        raise ValueError(f"{args.run}: a {module.NAME} run, not a forecast run")
    path, rows = module.predict(Path(args.run), args.data, args.horizon, args.out, args.device)
    print(f"{len(rows)} steps forecast after the end of {args.data}: {path}")
    return 0


def run_translate(args) -> int:
    module = task_of_run(args.run)
    if not hasattr(module, "translate"):
        raise ValueError(f"{args.run}: a {module.NAME} run, not a translate run")
    lines = args.text or [line.rstrip("\n") for line in sys.stdin]
    module.translate(Path(args.run), lines, args.beam, args.temperature, args.seed, args.heatmap,
                     args.device, no_repeat_ngram=args.no_repeat_ngram)  # fmt: skip
    return 0


def run_data(args) -> int:
    if args.name == "fsdd":
        from rnnkit.data import fsdd

        speakers = args.test_speakers, args.val_speakers
        for line in fsdd.write_manifests(args.out, args.manifests, *speakers):
            print(line)
        return 0
    if args.name == "speech":
        from rnnkit.data import speech

        for split, manifest in speech.generate(args.out, args.hours, args.seed, args.kind).items():
            print(f"speech {split}: {manifest}")
        return 0
    if args.name == "bible-en-es":
        from rnnkit.data import bible

        count = bible.write_tsv(args.out)
    else:
        from rnnkit.data import numbers

        splits = numbers.make_splits(args.numbers, 0.05, 0.05, args.seed)
        count = numbers.write_tsv(args.out, splits)
    print(f"{args.name}: {count} pairs written to {args.out}")
    return 0


def run_classify(args) -> int:
    module = task_of_run(args.run)
    if not hasattr(module, "classify"):
        raise ValueError(f"{args.run}: a {module.NAME} run, not a classify run")
    if bool(args.text) == bool(args.file):
        raise ValueError("give a text to label or --file with texts, not both")
    module.classify(Path(args.run), args.text, args.file, args.out, args.device)
    return 0


def run_caption(args) -> int:
    module = task_of_run(args.run)
    if not hasattr(module, "caption"):
        raise ValueError(f"{args.run}: a {module.NAME} run, not a caption run")
    module.caption(Path(args.run), args.images, args.beam, args.temperature, args.seed, args.device)
    return 0


def run_transcribe(args) -> int:
    module = task_of_run(args.run)
    if not hasattr(module, "transcribe"):
        raise ValueError(f"{args.run}: a {module.NAME} run, not a speech run")
    module.transcribe(
        Path(args.run), args.files, args.stream, args.beam, args.lm, args.lm_weight,
        args.chunk_ms, args.device,
    )  # fmt: skip
    return 0


def run_export(args) -> int:
    from rnnkit.export import export_run

    try:
        paths = export_run(Path(args.run), args.format, args.step, args.out or None)
    except ImportError as err:  # onnx or onnxscript missing: the message says what to install
        print(f"rnnkit: error: {err}", file=sys.stderr)
        return 2
    print("\n".join(f"wrote {path}" for path in paths))
    return 0


BENCHES = {"memory": "memory", "distributed": "bench_distributed"}  # bench NAME: its module


def run_bench(args) -> int:
    named = BENCHES.get(args.rest[0]) if args.rest else None
    if named:
        return importlib.import_module(f"rnnkit.tools.{named}").main(args.rest[1:])
    from rnnkit.tools import bench

    return bench.main(args.rest)


def run_gradflow(args) -> int:
    from rnnkit.tools import gradflow

    return gradflow.main(args.rest)


def run_inspect(args) -> int:
    from rnnkit.tools import inspection

    path = inspection.report(Path(args.run), Path(args.text), Path(args.out), args.max_chars)
    print(f"wrote {path}")
    return 0


def run_summary(args) -> int:
    from torch.nn import functional as F

    from rnnkit.summary import summary, training_memory
    from rnnkit.tasks import charlm

    if task_of_run(args.run).NAME != "charlm":
        raise ValueError(
            f"{args.run}: summary RUN reads charlm runs; for another model call "
            "rnnkit.summary(model, seq_len) from Python"
        )
    config, vocab, model = charlm.load_run(Path(args.run), "cpu")
    print(summary(model, seq_len=config.window))
    ids = torch.randint(0, len(vocab), (config.window + 1, config.batch_size))
    model.train()

    def loss():
        logits, _ = model(ids[:-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), ids[1:].flatten())

    print(training_memory(model, loss, tokens=config.window * config.batch_size))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["bench"], ["gradflow"]):  # their own parsers read every flag, --help too
        rest = argparse.Namespace(rest=argv[1:])
        return run_bench(rest) if argv[0] == "bench" else run_gradflow(rest)
    args = parser().parse_args(argv)
    commands = {
        "train": run_train,
        "sample": run_sample,
        "eval": run_eval,
        "forecast": run_forecast,
        "translate": run_translate,
        "data": run_data,
        "classify": run_classify,
        "caption": run_caption,
        "transcribe": run_transcribe,
        "export": run_export,
        "bench": run_bench,
        "gradflow": run_gradflow,
        "inspect": run_inspect,
        "summary": run_summary,
    }
    run = commands[args.command]
    try:
        return run(args)
    except NonFiniteLoss as err:
        print(f"rnnkit: {err}", file=sys.stderr)
        return 1
    except (CorpusError, configuration.ConfigError, ValueError, FileNotFoundError) as err:
        print(f"rnnkit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
