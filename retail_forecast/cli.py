"""The `forecast` command: one entry point for data scientists, CI, containers and the operator."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from retail_forecast import __version__
from retail_forecast.core.schema import DataError, Freq
from retail_forecast.training.model import LEARNERS, LOSSES

EXIT_USAGE = 2
EXIT_GATE = 3
EXIT_STORE = 4
EXIT_ACCURACY = 5  # forecast evaluate: live WAPE above --fail-above
EXIT_DEMO = 1  # the demo's service failed to start, answer or stop; the cluster demo's rollout failed
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it


def _fail(message: str, code: int) -> int:
    print(f"forecast: error: {message}", file=sys.stderr)
    return code


def _freq(value: str) -> Freq:
    try:
        return Freq(value.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid frequency {value!r}: use D or W") from None


def _int_at_least(value: str, minimum: int) -> int:
    number = int(value)
    if number < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
    return number


def _positive_int(value: str) -> int:
    return _int_at_least(value, 1)


def _non_negative_int(value: str) -> int:
    return _int_at_least(value, 0)


def _int_at_least_10(value: str) -> int:
    return _int_at_least(value, 10)


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return number


# Hyper-parameter flags fix a parameter for every trial (Azure ML sweeps drive them from outside).
HYPERPARAMETER_FLAGS: dict[str, type] = {
    "learner": str,
    "loss": str,
    "learning_rate": float,
    "max_leaf_nodes": int,
    "min_samples_leaf": int,
    "l2_regularization": float,
    "max_features": float,
    "max_iter": int,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forecast", description=__doc__)
    parser.add_argument("--version", action="version", version=f"retail-forecast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", help="write a synthetic retail sales dataset (DESIGN schema)")
    synth.add_argument("--out", type=Path, required=True, help="output file, .csv or .parquet")
    synth.add_argument("--stores", type=_positive_int, default=10)
    synth.add_argument("--items", type=_positive_int, default=50)
    synth.add_argument("--periods", type=_positive_int, default=None, help="default: 730 daily, 156 weekly")
    synth.add_argument("--freq", type=_freq, default=Freq.DAILY)
    synth.add_argument("--seed", type=int, default=0)

    train = commands.add_parser("train", help="train, check and export a model from sales data")
    train.add_argument("--data", type=Path, required=True, help="sales .csv/.parquet, or an M5 directory")
    train.add_argument("--out", type=Path, required=True, help="folder for model, manifest and report")
    _add_training_options(train)

    publish = commands.add_parser("publish", help="publish a trained model folder as an immutable version")
    publish.add_argument("model_dir", type=Path)
    publish.add_argument("--store", required=True, help="file:///abs/dir or azureblob://container/prefix")
    publish.add_argument("--name", required=True)
    publish.add_argument(
        "--version",
        dest="model_version",
        default=None,
        help="store under this version instead of the manifest's",
    )

    versions = commands.add_parser("versions", help="list the complete versions of a model in a store")
    versions.add_argument("--store", required=True)
    versions.add_argument("--name", required=True)

    fetch = commands.add_parser("fetch-model", help="fetch one model version and verify its sha256")
    fetch.add_argument("store")
    fetch.add_argument("name")
    fetch.add_argument("model_version", metavar="version")
    fetch.add_argument("dest", type=Path)
    fetch.add_argument("--sha256", default=None, help="refuse the model unless its digest is this")

    retire = commands.add_parser(
        "retire",
        help="mark a version that nothing serves or rolls back to any more, so the store may tier it",
        description="Retag a complete version's blobs `retired`: the storage lifecycle policy then moves it "
        "to Cool (and Archive in prod), from where a scoring pod cannot fetch it until it is rehydrated. "
        "Run it from the pipeline that publishes (it has write access to the store; the operator, which "
        "only reads, does not retire). Local stores have no tiering: there it only checks the version.",
    )
    retire.add_argument("--store", required=True)
    retire.add_argument("--name", required=True)
    retire.add_argument("--version", dest="model_version", required=True)

    serve = commands.add_parser("serve", help="serve a model (Open Inference Protocol v2 + forecast API)")
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--model-dir", type=Path, default=None, help="a local model folder")
    source.add_argument("--model-uri", default=None, help="a model store URI; needs --name and --version")
    serve.add_argument("--name", dest="model_name", default=None)
    serve.add_argument("--version", dest="model_version", default=None)
    serve.add_argument("--sha256", dest="model_sha256", default=None, help="refuse any other model bytes")
    serve.add_argument("--fetch-dir", type=Path, default=None, help="where a fetched model is kept")
    serve.add_argument("--host", default=None, help="default 0.0.0.0 (FORECAST_HOST)")
    serve.add_argument("--port", type=int, default=None, help="default 8080 (FORECAST_PORT)")
    # The serving limits (README's limits table; their defaults live in inference/limits.py).
    limits = {
        "--max-batch-rows": "rows one infer request may carry",
        "--max-forecast-series": "series one /v1/forecast request may carry",
        "--max-history-periods": "periods /v1/forecast histories may span, per series and together",
        "--max-forecast-bytes": "bytes of a /v1/forecast body",
        "--max-concurrent-forecasts": "/v1/forecast requests computed at once (threads)",
        "--max-concurrency": "scoring requests in progress; more get 503",
        "--max-inflight-bytes": "request body bytes held at once; more get 503",
        "--max-queue-rows": "rows waiting for the model before requests get 503",
    }
    for flag, what in limits.items():
        serve.add_argument(flag, type=_positive_int, default=None, help=f"most {what}")
    serve.add_argument(
        "--body-timeout",
        dest="body_timeout_seconds",
        type=_positive_float,
        default=None,
        help="seconds a client may take to send a scoring request's body; 408 beyond (default 30)",
    )
    serve.add_argument(
        "--coalesce-rows",
        type=_positive_int,
        default=None,
        help="score requests that wait for the model together, up to this many rows (default 128; 1: never)",
    )
    serve.add_argument("--intra-op-threads", type=_positive_int, default=None)
    serve.add_argument("--log-level", default=None)
    serve.add_argument(
        "--shutdown-delay",
        dest="shutdown_delay_seconds",
        type=_non_negative_int,
        default=None,
        help="seconds to keep serving, not ready, after SIGTERM (default 5)",
    )
    serve.add_argument("--no-access-log", dest="access_log", action="store_const", const=False, default=None)
    serve.add_argument(
        "--no-drift",
        dest="drift",
        action="store_const",
        const=False,
        default=None,
        help="do not report input drift (forecast_feature_drift_psi)",
    )

    predict = commands.add_parser("predict", help="forecast every series of a dataset into one Parquet run")
    predict.add_argument(
        "--data",
        required=True,
        help="sales .csv/.parquet (a path or azureblob://container/path), or an M5 directory",
    )
    predict.add_argument(
        "--max-input-bytes",
        type=_positive_int,
        default=None,
        help="refuse a blob --data larger than this before downloading it (default 20 GiB)",
    )
    _add_model_source(predict)
    predict.add_argument(
        "--origin",
        type=_date,
        default=None,
        help="last period of history the forecast reads (default: the data's last date)",
    )
    predict.add_argument("--horizon", type=_positive_int, default=None, help="default and most: the model's")
    predict.add_argument("--out", required=True, help="a new .parquet path, or azureblob://container/path")
    predict.add_argument("--chunk-series", type=_positive_int, default=2000, help="series scored at once")
    predict.add_argument("--no-progress", dest="progress", action="store_false")
    predict.add_argument(
        "--summary-file",
        type=Path,
        default=None,
        help="after a successful run, write its one-line JSON summary here (e.g. /dev/termination-log)",
    )

    evaluate = commands.add_parser("evaluate", help="score past forecast runs against the actuals")
    evaluate.add_argument(
        "--forecasts", action="append", required=True, help="a predict run, local or azureblob (repeatable)"
    )
    evaluate.add_argument(
        "--actuals", type=Path, required=True, help="sales .csv/.parquet, or an M5 directory"
    )
    evaluate.add_argument(
        "--fail-above", type=float, default=None, help=f"exit {EXIT_ACCURACY} if a version's WAPE is above"
    )
    evaluate.add_argument("--metrics-out", type=Path, default=None, help="Prometheus text exposition file")
    evaluate.add_argument("--pushgateway", default=None, help="push the figures to this Pushgateway URL")

    operator = commands.add_parser("operator", help="run the ForecastModel operator (kopf)")
    operator.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        help="watch this namespace (repeatable); default: all namespaces",
    )
    operator.add_argument(
        "--peering",
        default=None,
        help="kopf peering name: replicas elect one active operator (default: standalone)",
    )
    operator.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority of this replica (default: random, so peers never tie)",
    )
    operator.add_argument(
        "--liveness", default="http://0.0.0.0:8081/healthz", help="kopf liveness endpoint URL ('' to disable)"
    )
    operator.add_argument(
        "--context",
        default=None,
        help="kubeconfig context (default: in-cluster service account, else the current context)",
    )
    operator.add_argument(
        "--log-format",
        choices=["json", "plain", "full"],
        default="json",
        help="kopf's log formats: one JSON object a line (default), or text",
    )
    operator.add_argument("--verbose", action="store_true", help="log at DEBUG (default INFO)")

    demo = commands.add_parser(
        "demo", help="synthesise, train, publish, serve the published version and show its forecasts"
    )
    demo.add_argument("--out", type=Path, default=Path("out/demo"))
    demo.add_argument("--stores", type=_positive_int, default=10)
    demo.add_argument("--items", type=_positive_int, default=30)
    demo.add_argument("--freq", type=_freq, default=Freq.DAILY)
    demo.add_argument("--trials", type=_positive_int, default=4)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--series", type=_positive_int, default=3, help="series to forecast and show")
    demo.add_argument(
        "--horizon",
        type=_positive_int,
        default=7,
        help="periods held back from training, then forecast and compared (at most the model's horizon)",
    )
    demo.add_argument(
        "--quantiles",
        type=_quantile_levels,
        default=None,
        help="forecast train --quantiles for the demo's model (default: train's; 'none': point only)",
    )
    demo.add_argument("--port", type=int, default=0, help="the service's loopback port (default: a free one)")
    demo.add_argument(
        "--ready-timeout", type=float, default=None, help="seconds to wait for the service (default 120)"
    )

    cluster = commands.add_parser(
        "demo-cluster",
        help="install the operator on the kubeconfig's cluster and show a ForecastModel's blue/green rollout",
    )
    cluster.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    cluster.add_argument("--namespace", default="forecast-demo", help="the demo's own namespace")
    cluster.add_argument(
        "--operator-image", default=None, help="default: the chart's (retail-forecast/operator:<appVersion>)"
    )
    cluster.add_argument(
        "--inference-image", default=None, help="default: retail-forecast/inference:<the chart's appVersion>"
    )
    cluster.add_argument(
        "--store-connection-string",
        default=None,
        help="use this Azure Blob Storage account as the model store instead of Azurite in the namespace",
    )
    cluster.add_argument(
        "--timeout", type=_positive_int, default=300, help="seconds each wait may take (default 300)"
    )
    cluster.add_argument(
        "--progress-deadline",
        type=_int_at_least_10,
        default=180,
        help="seconds a new version has to become available before the operator rolls it back",
    )
    cluster.add_argument("--out", type=Path, default=Path("out/demo-cluster"), help="models and request.json")
    cluster.add_argument(
        "--delete", action="store_true", help="remove the namespace and the cluster-wide RBAC the demo made"
    )

    aml = commands.add_parser("aml", help="Azure ML jobs")
    aml_commands = aml.add_subparsers(dest="aml_command", required=True, metavar="COMMAND")
    submit = aml_commands.add_parser("submit", help="submit the training command (or sweep) job")
    submit.add_argument("--sweep", action="store_true", help="submit the hyper-parameter sweep job")
    submit.add_argument("--subscription", default=None, help="default: $AZURE_SUBSCRIPTION_ID")
    submit.add_argument("--resource-group", default=None, help="default: $AZURE_RESOURCE_GROUP")
    submit.add_argument("--workspace", default=None, help="default: $AZUREML_WORKSPACE_NAME")
    submit.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="INPUT=VALUE",
        help="override a job input, e.g. --set horizon=8 (repeatable)",
    )
    submit.add_argument(
        "--code",
        type=Path,
        default=None,
        help="source folder to upload (default: this checkout, found from the job file)",
    )
    submit.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    return parser


def _quantile_levels(value: str) -> tuple[float, ...]:
    from retail_forecast.training.quantiles import parse_levels  # noqa: PLC0415 - training-only module

    try:
        return parse_levels(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _date(value: str) -> str:
    import datetime as dt  # noqa: PLC0415

    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {value!r}: use YYYY-MM-DD") from None


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", type=Path, default=None, help="a local model folder")
    source.add_argument("--model-uri", default=None, help="a model store URI; needs --name and --version")
    parser.add_argument("--name", dest="model_name", default=None)
    parser.add_argument("--version", dest="model_version", default=None)
    parser.add_argument("--sha256", dest="model_sha256", default=None, help="refuse any other model bytes")
    parser.add_argument("--fetch-dir", type=Path, default=None, help="where a fetched model is kept")


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--horizon", type=_positive_int, default=None, help="default: 28 daily, 8 weekly")
    parser.add_argument("--freq", type=_freq, default=None, help="D or W; default: inferred from dates")
    parser.add_argument("--trials", type=_positive_int, default=8, help="hyper-parameter search trials")
    parser.add_argument("--folds", type=int, default=3, help="rolling-origin folds; the last is the holdout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="demand", help="model name written to the manifest")
    parser.add_argument("--model-version", default=None, help="default: a UTC timestamp")
    parser.add_argument(
        "--gate-margin",
        type=float,
        default=0.05,
        help="required relative WAPE improvement over seasonal naive (0.05 = 5%%)",
    )
    parser.add_argument(
        "--memory-budget-gib",
        type=_positive_float,
        default=2.0,
        help="memory the training rows may take in a fit; sets how many rows are sampled (default 2)",
    )
    parser.add_argument(
        "--max-rows",
        type=_positive_int,
        default=None,
        help="at most this many training rows (default: as many as the memory budget holds)",
    )
    parser.add_argument(
        "--search-rows",
        type=_positive_int,
        default=None,
        help="rows each search trial fits on (default: a tenth of the training rows, at least 100000)",
    )
    parser.add_argument(
        "--quantiles",
        type=_quantile_levels,
        default="0.1,0.5,0.9",
        help="quantile levels the model also forecasts, one ONNX output each ('none': point forecasts only)",
    )
    parser.add_argument(
        "--quantile-rows",
        type=_positive_int,
        default=None,
        help="rows each quantile head fits on (default: as many as a search trial)",
    )
    hyper = parser.add_argument_group("fixed hyper-parameters (skip searching them)")
    for name, kind in HYPERPARAMETER_FLAGS.items():
        choices = {"loss": LOSSES, "learner": LEARNERS}.get(name)
        hyper.add_argument(
            f"--{name.replace('_', '-')}", dest=f"hp_{name}", type=kind, default=None, choices=choices
        )


def _train(args: argparse.Namespace, data: Path, out: Path) -> int:
    from retail_forecast.core.data import build_panel, read_sales, validate_sales  # noqa: PLC0415
    from retail_forecast.core.manifest import check_name, check_version  # noqa: PLC0415
    from retail_forecast.training.pipeline import (  # noqa: PLC0415
        GateError,
        NotEnoughDataError,
        OutputExistsError,
        TrainConfig,
        train,
    )

    try:
        check_name(args.name)
        if args.model_version:
            check_version(args.model_version)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    fixed = {name: getattr(args, f"hp_{name}") for name in HYPERPARAMETER_FLAGS}
    fixed = {name: value for name, value in fixed.items() if value is not None}
    config = TrainConfig(
        horizon=args.horizon,
        folds=args.folds,
        trials=args.trials,
        seed=args.seed,
        name=args.name,
        version=args.model_version,
        gate_margin=args.gate_margin,
        memory_budget_gib=args.memory_budget_gib,
        max_rows=args.max_rows,
        search_rows=args.search_rows,
        fixed_params=fixed,
        quantiles=args.quantiles,
        quantile_rows=args.quantile_rows,
    )
    try:
        if data.is_dir():
            from retail_forecast.core.m5 import load_m5  # noqa: PLC0415

            frame = validate_sales(load_m5(data), source=str(data))
        else:
            frame = read_sales(data)
        panel, report = build_panel(frame, args.freq, source=str(data))
        for line in report.lines():
            print(f"data: {line}", file=sys.stderr)
        result = train(panel, report, out, config)
    except (DataError, NotEnoughDataError, OutputExistsError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except GateError as exc:
        return _fail(f"{exc}; report in {out}", EXIT_GATE)
    from retail_forecast.training.report import REPORT_FILE, metrics_table  # noqa: PLC0415

    holdout = result.holdout
    print(
        "\n".join(
            metrics_table(
                {
                    "model": holdout.model,
                    "seasonal naive": holdout.seasonal_naive,
                    "moving average": holdout.moving_average,
                }
            )
        )
    )
    print(result.gate_message)
    assert result.manifest is not None
    print(f"model: {out / 'model.onnx'} (version {result.manifest.version}, sha256 {result.manifest.sha256})")
    print(f"report: {out / REPORT_FILE}")
    return 0


def _publish(model_dir: Path, store_uri: str, name: str, version: str | None) -> int:
    from retail_forecast.core.store import open_store  # noqa: PLC0415

    manifest = open_store(store_uri).publish(model_dir, name, version)
    print(f"published {manifest.name} version {manifest.version} (sha256 {manifest.sha256}) to {store_uri}")
    return 0


def _model_dir(args: argparse.Namespace) -> Path:
    """A local model folder as given, or a store version fetched and sha256-verified, like `serve`."""
    given: Path | None = args.model_dir
    if given is not None:
        return given
    if not (args.model_name and args.model_version):
        raise ValueError("--model-uri needs --name and --version")
    import tempfile  # noqa: PLC0415

    from retail_forecast.core.store import open_store  # noqa: PLC0415

    base = args.fetch_dir or Path(tempfile.mkdtemp(prefix="forecast-model-"))
    dest = Path(base, str(args.model_name), str(args.model_version))
    open_store(args.model_uri).fetch(args.model_name, args.model_version, dest, args.model_sha256)
    return dest


def _predict(args: argparse.Namespace) -> int:
    import pandas as pd  # noqa: PLC0415

    from retail_forecast.batch.predict import predict  # noqa: PLC0415
    from retail_forecast.inference.model import SelfCheckError, load_model  # noqa: PLC0415

    model_dir = _model_dir(args)
    try:
        model = load_model(model_dir)
        model.self_check()
    except SelfCheckError as exc:
        return _fail(f"model {model_dir}: {exc}", EXIT_STORE)
    manifest = model.manifest
    try:
        report = predict(
            args.data,
            model,
            args.out,
            origin=pd.Timestamp(args.origin) if args.origin else None,
            horizon=args.horizon,
            chunk_series=args.chunk_series,
            progress=args.progress,
            max_input_bytes=args.max_input_bytes,
        )
    except DataError as exc:
        return _fail(str(exc), EXIT_USAGE)
    for line in report.lines():
        print(f"predict: {line}", file=sys.stderr)
    if args.summary_file is not None:
        args.summary_file.write_text(report.summary(model, args.out).message())
    print(f"wrote {report.rows} forecasts of {manifest.name} {manifest.version} to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from prometheus_client import push_to_gateway, write_to_textfile  # noqa: PLC0415

    from retail_forecast.batch.evaluate import evaluate, metrics_registry, table_lines  # noqa: PLC0415
    from retail_forecast.batch.output import read_forecasts  # noqa: PLC0415

    try:
        result = evaluate([read_forecasts(target) for target in args.forecasts], args.actuals)
    except DataError as exc:
        return _fail(str(exc), EXIT_USAGE)
    print("\n".join(table_lines(result)))
    print(f"evaluated {result.evaluated} forecast points; {result.pending} have no actual yet")
    if result.evaluated == 0:
        return _fail("no forecast point has an actual yet: nothing to judge", EXIT_USAGE)
    registry = metrics_registry(result)
    if args.metrics_out is not None:
        write_to_textfile(str(args.metrics_out), registry)
    if args.pushgateway:
        push_to_gateway(args.pushgateway, job="forecast-evaluate", registry=registry)
    if args.fail_above is not None:
        worse = [f for f in result.versions() if f.wape is not None and f.wape > args.fail_above]
        if worse:
            listed = ", ".join(f"{f.version} {f.wape:.4f}" for f in worse)
            return _fail(f"live WAPE above {args.fail_above}: {listed}", EXIT_ACCURACY)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from retail_forecast.demo import DemoError, run  # noqa: PLC0415

    try:
        return run(
            out=args.out,
            stores=args.stores,
            items=args.items,
            freq=args.freq,
            trials=args.trials,
            seed=args.seed,
            series=args.series,
            horizon=args.horizon,
            quantiles=args.quantiles,
            port=args.port,
            ready_timeout=args.ready_timeout,
        )
    except DemoError as exc:
        return _fail(str(exc), EXIT_DEMO)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing is left running", EXIT_INTERRUPTED)


def _demo_cluster(args: argparse.Namespace) -> int:
    from retail_forecast import demo_cluster  # noqa: PLC0415
    from retail_forecast.demo import DemoError  # noqa: PLC0415

    settings = demo_cluster.Settings(
        namespace=args.namespace,
        context=args.context,
        operator_image=args.operator_image,
        inference_image=args.inference_image,
        store_connection_string=args.store_connection_string,
        timeout=args.timeout,
        progress_deadline=args.progress_deadline,
        out=args.out,
    )
    try:
        return demo_cluster.delete(settings) if args.delete else demo_cluster.run(settings)
    except demo_cluster.NoCluster as exc:
        return _fail(str(exc), EXIT_USAGE)
    except DemoError as exc:
        return _fail(str(exc), EXIT_DEMO)
    except KeyboardInterrupt:
        return _fail(
            "interrupted; what was created stays: `forecast demo-cluster --delete` removes it",
            EXIT_INTERRUPTED,
        )


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError  # noqa: PLC0415

    from retail_forecast.inference.server import serve  # noqa: PLC0415
    from retail_forecast.inference.settings import ServeSettings  # noqa: PLC0415

    # every setting the serve flags name (dest = the setting's name); unset flags leave the environment's
    given = {
        name: value for name in ServeSettings.model_fields if (value := getattr(args, name, None)) is not None
    }
    try:
        settings = ServeSettings(**given)
    except ValidationError as exc:
        return _fail(
            "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in exc.errors()), EXIT_USAGE
        )
    serve(settings)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from retail_forecast.core.manifest import ManifestError  # noqa: PLC0415
    from retail_forecast.core.store import StoreError  # noqa: PLC0415

    try:
        if args.command == "synth":
            from retail_forecast.training.synth import synthesize_to  # noqa: PLC0415

            frame = synthesize_to(
                args.out,
                stores=args.stores,
                items=args.items,
                periods=args.periods,
                freq=args.freq,
                seed=args.seed,
            )
            print(f"wrote {len(frame)} rows to {args.out}")
            return 0
        if args.command == "train":
            return _train(args, args.data, args.out)
        if args.command == "publish":
            return _publish(args.model_dir, args.store, args.name, args.model_version)
        if args.command == "versions":
            from retail_forecast.core.store import open_store  # noqa: PLC0415

            for version in open_store(args.store).versions(args.name):
                print(version)
            return 0
        if args.command == "fetch-model":
            from retail_forecast.core.features import schema_mismatch  # noqa: PLC0415
            from retail_forecast.core.store import open_store  # noqa: PLC0415

            manifest = open_store(args.store).fetch(args.name, args.model_version, args.dest, args.sha256)
            # The serving pods' init container: a model this image cannot feed fails here, with its reason
            # as the container's termination message, before a server starts that would never be ready.
            mismatch = schema_mismatch(
                Freq(manifest.freq), manifest.features.spec_version, manifest.features.names
            )
            if mismatch is not None:
                shutil.rmtree(args.dest)
                return _fail(f"model {manifest.name} {manifest.version}: {mismatch}", EXIT_STORE)
            print(f"fetched {manifest.name} {manifest.version} (sha256 {manifest.sha256}) to {args.dest}")
            return 0
        if args.command == "retire":
            from retail_forecast.core.store import open_store  # noqa: PLC0415

            store = open_store(args.store)
            store.retire(args.name, args.model_version)
            print(f"retired {store.describe(args.name, args.model_version)}")
            return 0
        if args.command == "demo":
            return _demo(args)
        if args.command == "demo-cluster":
            return _demo_cluster(args)
        if args.command == "predict":
            return _predict(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "operator":
            from retail_forecast.operator.kube import NoKubernetesApi  # noqa: PLC0415
            from retail_forecast.operator.main import run  # noqa: PLC0415

            try:
                run(
                    namespaces=args.namespaces,
                    peering=args.peering,
                    liveness=args.liveness or None,
                    priority=args.priority,
                    context=args.context,
                    log_format=args.log_format,
                    verbose=args.verbose,
                )
            except NoKubernetesApi as exc:
                return _fail(str(exc), EXIT_USAGE)
            return 0
        if args.command == "aml":
            from retail_forecast.training import aml  # noqa: PLC0415

            job = aml.submit(
                aml.job_path("sweep" if args.sweep else "command"),
                subscription_id=args.subscription,
                resource_group=args.resource_group,
                workspace=args.workspace,
                overrides=aml.parse_overrides(args.overrides),
                code=args.code,
                wait=args.wait,
            )
            print(job)
            return 0
    except (StoreError, ManifestError) as exc:
        return _fail(str(exc), EXIT_STORE)
    except RuntimeError as exc:  # Azure ML: missing workspace settings, missing extra, failed job
        from retail_forecast.training.aml import AmlError  # noqa: PLC0415

        if isinstance(exc, AmlError):
            return _fail(str(exc), EXIT_USAGE)
        raise
    except ValueError as exc:  # bad names, versions, URIs and overrides
        return _fail(str(exc), EXIT_USAGE)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
