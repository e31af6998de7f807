#!/usr/bin/env bash
# CI image stage: build Dockerfile.inference and Dockerfile.operator with buildah and smoke-test them.
#
# No registry is reachable for base images and there is no Docker engine, so:
#   1. the Python base image is made here: debootstrap of Debian bookworm (minbase + python3,
#      python3-venv, ca-certificates; bookworm's python3 is 3.11), committed as $BASE_IMAGE. It is kept
#      in a private buildah store (vfs driver) and made again only when its recipe changes;
#   2. both Dockerfiles are built unchanged against it (--build-arg BASE_IMAGE), with --layers so that
#      unchanged dependencies reuse their install layer (the Dockerfiles install them before copying
#      the source). pip inside the build gets this machine's index and CA settings from a pip.conf
#      bind-mounted for RUN steps only: nothing of it lands in an image;
#   3. `buildah run` smoke-tests them: the inference image serves a tiny model (trained on the host with
#      .venv) on 127.0.0.1 until /v2/health/ready answers 200; the operator image imports its handlers
#      and prints its version; both run as uid 10001 and carry no compiler nor pip config.
# Needs root. Safe to re-run; exits non-zero on any failure. Only loopback is ever contacted by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

STATE=${RF_IMAGES_STATE:-/var/tmp/retail-forecast-buildah}
BASE_IMAGE=localhost/retail-forecast-python:3.11
INFERENCE_IMAGE=localhost/retail-forecast-inference:ci
OPERATOR_IMAGE=localhost/retail-forecast-operator:ci
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
# Bump when the base recipe below changes: an image with another label is made again.
BASE_RECIPE="1 $SUITE minbase $BASE_PACKAGES"
BUILDAH=(buildah --root "$STATE/storage" --runroot "$STATE/run" --storage-driver vfs)

STAGE_START=$SECONDS
STEP_NAME=""
STEP_START=0
step() {
  step_end
  STEP_NAME=$1
  STEP_START=$SECONDS
  echo "== images: $STEP_NAME"
}
step_end() {
  if [[ -n $STEP_NAME ]]; then
    echo "-- images: $STEP_NAME took $((SECONDS - STEP_START)) s"
    STEP_NAME=""
  fi
}

SERVER_PID=""
WORK=""
cleanup() {
  local rc=$?
  if [[ -n $SERVER_PID ]]; then stop_server; fi
  # Working containers of this run (the store is private to this script, and we hold its lock).
  if [[ -d $STATE/storage ]]; then "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true; fi
  if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
  if ((rc != 0)); then echo "images: FAILED (step: ${STEP_NAME:-?}, exit $rc)" >&2; fi
  exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------- tools
step "tools"
need=()
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || need+=(debootstrap)
[[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
buildah --version
[[ -x $REPO/.venv/bin/forecast ]] || { echo "images: $REPO/.venv is missing: run make install first" >&2; exit 1; }

mkdir -p "$STATE"
exec 9>"$STATE/lock"
flock -w 1800 9 || { echo "images: another run holds $STATE/lock" >&2; exit 1; }
WORK=$(mktemp -d "$STATE/work.XXXXXX")
chmod 755 "$WORK"
# Leftovers of an interrupted run: working containers, and a debootstrap that left mounts behind.
"${BUILDAH[@]}" rm --all >/dev/null

# ---------------------------------------------------------------------------------------- base image
# The Debian mirror apt is configured with (deb822 or one-line sources), for debootstrap.
debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) {print $i; exit}}' "$f")
    if [[ -n $uri ]]; then echo "${uri%/}"; return; fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) {print $i; exit}}' "$f")
    if [[ -n $uri ]]; then echo "${uri%/}"; return; fi
  done
  echo http://deb.debian.org/debian
}

base_label=$("${BUILDAH[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "io.retail-forecast.base-recipe"}}' \
  "$BASE_IMAGE" 2>/dev/null || true)
if [[ $base_label == "$BASE_RECIPE" ]]; then
  step "base image $BASE_IMAGE (cached)"
else
  mirror=$(debian_mirror)
  step "base image $BASE_IMAGE: debootstrap $SUITE from $mirror"
  ctr=$("${BUILDAH[@]}" from --name rf-base-build scratch)
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$mnt" "$mirror" >"$WORK/debootstrap.log" 2>&1 || {
    tail -30 "$WORK/debootstrap.log" >&2
    exit 1
  }
  # No package caches, no host resolver or host name in the image (buildah run/build inject their own).
  rm -rf "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/cache/apt/*.bin "$mnt"/var/lib/apt/lists/* \
    "$mnt"/var/log/* "$mnt"/etc/resolv.conf "$mnt"/etc/hostname "$mnt"/tmp/* "$mnt"/var/tmp/*
  "$mnt"/usr/bin/python3 --version
  "${BUILDAH[@]}" umount "$ctr" >/dev/null
  "${BUILDAH[@]}" config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --cmd python3 \
    --label "io.retail-forecast.base-recipe=$BASE_RECIPE" \
    "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
fi

# -------------------------------------------------------------------------------- pip inside builds
# This machine's pip settings that a build container can use: http(s) indexes and the CA bundle (the
# network may present its own CA). file:// indexes and find-links on the host are not visible inside.
host_pip() {
  local pip=$REPO/.venv/bin/pip
  "$pip" config get "$1" 2>/dev/null || true
}
http_only() { tr ' ' '\n' | grep -E '^https?://' | tr '\n' ' ' | sed 's/ $//' || true; }
index_url=$(printf '%s' "${PIP_INDEX_URL:-$(host_pip global.index-url)}" | http_only)
extra_index_url=$(printf '%s' "${PIP_EXTRA_INDEX_URL:-$(host_pip global.extra-index-url)}" | tr '\n' ' ' | http_only)
ca_bundle=${PIP_CERT:-$(host_pip global.cert)}
[[ -n $ca_bundle && -r $ca_bundle ]] || ca_bundle=/etc/ssl/certs/ca-certificates.crt
{
  echo "[global]"
  echo "timeout = ${PIP_DEFAULT_TIMEOUT:-180}"
  if [[ -r $ca_bundle ]]; then echo "cert = /etc/ci-pip-ca.crt"; fi
  if [[ -n $index_url ]]; then echo "index-url = $index_url"; fi
  if [[ -n $extra_index_url ]]; then echo "extra-index-url = $extra_index_url"; fi
} >"$WORK/pip.conf"
BUILD_MOUNTS=(--volume "$WORK/pip.conf:/etc/pip.conf:ro")
if [[ -r $ca_bundle ]]; then BUILD_MOUNTS+=(--volume "$ca_bundle:/etc/ci-pip-ca.crt:ro"); fi

# Only the source matters: no virtualenvs, caches or bytecode (they would also defeat the layer cache).
cat >"$WORK/ignore" <<'EOF'
.git
.venv
.tools
node_modules
build
out
.hypothesis
.mypy_cache
.pytest_cache
.ruff_cache
*.egg-info
**/__pycache__
**/*.pyc
EOF

# ------------------------------------------------------------------------------------------- builds
build() {
  local dockerfile=$1 image=$2
  step "build $image ($dockerfile)"
  # The build stage is tagged too, so that pruning dangling images never drops the cached pip install.
  local common=(build --layers --isolation chroot --network host --pull=never
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --ignorefile "$WORK/ignore" "${BUILD_MOUNTS[@]}" -f "$dockerfile")
  local log=$WORK/build-${dockerfile#Dockerfile.}
  if ! "${BUILDAH[@]}" "${common[@]}" --target build -t "$image-build" . >"$log-stage.log" 2>&1; then
    tail -60 "$log-stage.log" >&2
    exit 1
  fi
  if ! "${BUILDAH[@]}" "${common[@]}" -t "$image" . >"$log.log" 2>&1; then
    tail -60 "$log.log" >&2
    exit 1
  fi
  echo "$image: $(grep -c -- '--> Using cache' "$log-stage.log" || true) of" \
    "$(grep -cE 'STEP [0-9]+/[0-9]+: [^F]' "$log-stage.log" || true) build-stage instructions from cache"
}
build Dockerfile.inference "$INFERENCE_IMAGE"
build Dockerfile.operator "$OPERATOR_IMAGE"

step "prune superseded layers"
"${BUILDAH[@]}" rmi --prune >/dev/null || true
"${BUILDAH[@]}" images

# ------------------------------------------------------------------------------------------ checks
# Both images: uid 10001 from the image config and at run time, no compiler, no pip config or CA baked in.
check_image() {
  local image=$1 ctr user
  step "check $image: uid, no compilers, no build-time pip config"
  user=$("${BUILDAH[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
  [[ $user == 10001:10001 ]] || { echo "images: $image runs as '$user', not 10001:10001" >&2; exit 1; }
  ctr=$("${BUILDAH[@]}" from --pull=never --quiet "$image")
  # shellcheck disable=SC2016 # expanded by the container's shell
  "${BUILDAH[@]}" run --isolation chroot "$ctr" -- sh -c '
    set -e
    test "$(id -u):$(id -g)" = 10001:10001 || { echo "running as $(id -u):$(id -g)"; exit 1; }
    for tool in cc gcc g++ c++ clang make ld as cpp; do
      if command -v "$tool" >/dev/null; then echo "compiler or build tool in the image: $tool"; exit 1; fi
    done
    for leak in /etc/pip.conf /etc/ci-pip-ca.crt /etc/xdg/pip/pip.conf; do
      if [ -e "$leak" ]; then echo "build-time file left in the image: $leak"; exit 1; fi
    done
    echo "uid $(id -u), $(python3 --version), no compilers"'
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
}
check_image "$INFERENCE_IMAGE"
check_image "$OPERATOR_IMAGE"

step "smoke test $OPERATOR_IMAGE"
ctr=$("${BUILDAH[@]}" from --pull=never --quiet "$OPERATOR_IMAGE")
"${BUILDAH[@]}" run --isolation chroot "$ctr" -- forecast --version
"${BUILDAH[@]}" run --isolation chroot "$ctr" -- python -c \
  'import kopf, retail_forecast.operator.handlers; print("kopf", kopf.__version__ if hasattr(kopf, "__version__") else "imported")'
"${BUILDAH[@]}" rm "$ctr" >/dev/null

# A tiny model, trained on the host with the project's own venv (the images carry no training extra).
step "train a tiny model for the inference smoke test"
"$REPO/.venv/bin/forecast" synth --stores 2 --items 3 --periods 200 --out "$WORK/sales.csv" >/dev/null
# Fixed hyper-parameters, two folds, few trees: seconds, not minutes (CI's own tests may share the CPUs).
"$REPO/.venv/bin/forecast" train --data "$WORK/sales.csv" --out "$WORK/model" --horizon 7 --trials 1 --folds 2 \
  --max-rows 2000 --loss poisson --learning-rate 0.1 --max-iter 20 --max-leaf-nodes 8 --min-samples-leaf 20 \
  --l2-regularization 0 --gate-margin -10 >"$WORK/train.log" 2>&1 || { tail -30 "$WORK/train.log" >&2; exit 1; }
chmod -R a+rX "$WORK/model"

# The batch CronJob's command (spec.batch): `forecast predict` in the image (the batch extra: tqdm).
step "smoke test $INFERENCE_IMAGE: forecast predict"
chmod a+r "$WORK/sales.csv"
ctr=$("${BUILDAH[@]}" from --pull=never --quiet "$INFERENCE_IMAGE")
"${BUILDAH[@]}" run --isolation chroot --volume "$WORK/model:/models:ro" --volume "$WORK/sales.csv:/data/sales.csv:ro" \
  "$ctr" -- forecast predict --data /data/sales.csv --model-dir /models --out /tmp/run.parquet --no-progress
"${BUILDAH[@]}" rm "$ctr" >/dev/null

stop_server() {
  local pid=$SERVER_PID
  SERVER_PID=""
  # The server runs in its own process group (setsid): end that group, then wait for it.
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

step "smoke test $INFERENCE_IMAGE: serve on 127.0.0.1 until /v2/health/ready"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ctr=$("${BUILDAH[@]}" from --pull=never --quiet "$INFERENCE_IMAGE")
setsid "${BUILDAH[@]}" run --isolation chroot --volume "$WORK/model:/models:ro" "$ctr" -- \
  forecast serve --model-dir /models --host 127.0.0.1 --port "$port" --no-access-log >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
ready=""
for _ in $(seq 1 120); do
  if code=$(curl -s -o "$WORK/ready.json" -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/v2/health/ready"); then
    if [[ $code == 200 ]]; then ready=yes; break; fi
  fi
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.5
done
if [[ -z $ready ]]; then
  echo "images: the inference image never became ready on 127.0.0.1:$port; its log:" >&2
  tail -40 "$WORK/serve.log" >&2
  exit 1
fi
echo "ready: $(cat "$WORK/ready.json")"
curl -sf --max-time 5 "http://127.0.0.1:$port/v2" && echo
stop_server
"${BUILDAH[@]}" rm "$ctr" >/dev/null

step_end
echo "== images: OK in $((SECONDS - STAGE_START)) s"
# Checks: both images' uid/compiler/pip-config checks, the operator smoke test, the inference smoke tests
# (predict, serve).
echo "images: 5 passed, 0 failed"
