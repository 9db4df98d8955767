"""A real single-node Apache Kafka 4.x broker (KRaft, combined broker+controller) as a process.

The broker's jars come from Maven Central via ``deploy/kafka/pom.xml`` into
``<repo>/.cache/kafka-<version>/libs``; its state (config, data, logs, pidfile) lives in
``cfg.state_dir``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import string
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from clm_devstack import processes
from clm_devstack.errors import DevstackError
from clm_devstack.paths import ServerDirs, find_repo_root

STARTED_MARKER = "Kafka Server started"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
QUICK_START_JIT = "-XX:TieredStopAtLevel=1"


@dataclass(frozen=True)
class KafkaConfig(ServerDirs):
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "384m"
    version: str = "4.1.1"
    repo_root: Path | None = None
    port_env: str = "CLM_KAFKA_PORT"
    controller_port_env: str = "CLM_KAFKA_CONTROLLER_PORT"
    # a broker that lives for one test: the JVM's quick compiler only (C1), which starts it in
    # about half the time and would slow a broker that serves for long
    short_lived: bool = False

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def properties_path(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "kafka.pid"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.logs_dir / "kafka.out"

    def root(self) -> Path:
        return self.repo_root if self.repo_root is not None else find_repo_root()

    def markers(self) -> list[str]:
        """What the broker's command line contains: its main class and our state dir."""
        return ["kafka.Kafka", str(self.state_dir.resolve())]


# --------------------------------------------------------------------------- pure helpers
def render_server_properties(cfg: KafkaConfig, template: str) -> str:
    """Fill the ``${...}`` placeholders of deploy/kafka/server.properties.template."""
    try:
        return string.Template(template).substitute(
            host=cfg.host,
            port=str(cfg.port),
            controller_port=str(cfg.controller_port),
            log_dirs=str(cfg.data_dir.resolve()),
        )
    except (KeyError, ValueError) as exc:
        raise DevstackError(
            f"deploy/kafka/server.properties.template has a bad placeholder ({exc})",
            "use only ${host}, ${port}, ${controller_port} and ${log_dirs}; write $$ for $",
        ) from exc


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, no leading '-'."""
    while True:
        raw = uuid.uuid4().bytes
        text = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        if not text.startswith("-") and any(raw):
            return text


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_HEAP_RE = re.compile(r"^[1-9][0-9]*[mMgG]$")


def validate_heap(heap: str) -> str:
    if not _HEAP_RE.match(heap):
        raise DevstackError(
            f"CLM_KAFKA_HEAP={heap!r} is not a JVM heap size",
            "use a value like 384m or 1g",
        )
    return heap


def java_argv(cfg: KafkaConfig, java: str, libs_dir: Path, log4j_config: Path) -> list[str]:
    """The command line that runs the broker."""
    heap = validate_heap(cfg.heap)
    return [
        java,
        "-Xms128m",
        f"-Xmx{heap}",
        *([QUICK_START_JIT] if cfg.short_lived else []),
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={cfg.logs_dir.resolve()}",
        f"-Dlog4j2.configurationFile={log4j_config}",
        "-cp",
        f"{libs_dir}/*",
        "kafka.Kafka",
        str(cfg.properties_path.resolve()),
    ]


def parse_java_major(version_output: str) -> int | None:
    """The major version from ``java -version`` output (``"17.0.15"`` -> 17, ``"1.8.0"`` -> 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major


# --------------------------------------------------------------------------- jars
def jars_dir(repo_root: Path, version: str = "4.1.1") -> Path:
    return repo_root / ".cache" / f"kafka-{version}" / "libs"


def ensure_jars(repo_root: Path, version: str = "4.1.1") -> Path:
    """Download the broker's jars with Maven once; return the directory holding them."""
    pom = repo_root / "deploy" / "kafka" / "pom.xml"
    libs = jars_dir(repo_root, version)
    marker = libs.parent / ".complete"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    if libs.is_dir() and marker.is_file() and marker.read_text(encoding="utf-8").strip() == digest:
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevstackError(
            "Maven (mvn) not found; it downloads the Kafka broker jars",
            "install it (apt-get install maven) and retry",
        )
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    print(f"devstack: downloading Kafka {version} jars with Maven into {libs} (one time)")
    argv = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
    ]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DevstackError(
            "Maven did not finish downloading the Kafka jars within 15 minutes",
            "check access to Maven Central (or your ~/.m2/settings.xml mirror) and retry",
        ) from exc
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        output = _ANSI_RE.sub("", result.stdout + "\n" + result.stderr).splitlines()
        errors = [ln for ln in output if "[ERROR]" in ln] or output or ["(no output)"]
        raise DevstackError(
            f"Maven could not download the Kafka jars: {processes.shorten(errors[0])}",
            "check access to Maven Central (or your ~/.m2/settings.xml mirror) and retry",
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.replace(libs)
    marker.write_text(digest + "\n", encoding="utf-8")
    return libs


# --------------------------------------------------------------------------- java
def find_java() -> str:
    """The ``java`` executable (JAVA_HOME first), checked to be 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise DevstackError("Java 17+ not found", "install openjdk-17-jre-headless")
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevstackError(f"cannot run {java}: {exc}", "install openjdk-17-jre-headless") from exc
    major = parse_java_major(result.stderr + result.stdout)
    if major is None or major < 17:
        raise DevstackError(
            f"Java 17+ not found ({java} is version {major or 'unknown'})",
            "install openjdk-17-jre-headless or point JAVA_HOME at a JDK 17+",
        )
    return java


# --------------------------------------------------------------------------- lifecycle
def running_pid(cfg: KafkaConfig) -> int | None:
    """The pid of our broker for this state dir, if it runs."""
    pid = processes.read_pidfile(cfg.pidfile)
    return pid if processes.pid_is_ours(pid, cfg.markers()) else None


def is_running(cfg: KafkaConfig) -> bool:
    return running_pid(cfg) is not None and processes.port_open(cfg.host, cfg.port)


def _log_has_started(cfg: KafkaConfig, offset: int) -> bool:
    try:
        with open(cfg.server_log, "rb") as handle:
            handle.seek(offset)
            return STARTED_MARKER.encode() in handle.read()
    except OSError:
        return False


def _failure_line(cfg: KafkaConfig) -> str:
    lines = processes.tail_lines(cfg.server_log, 40) + processes.tail_lines(cfg.stdout_log, 20)
    return processes.shorten(processes.relevant_line(lines))


def _format_storage(cfg: KafkaConfig, java: str, libs: Path, log4j: Path) -> None:
    """Format ``data_dir`` once; a pristine copy is kept so fresh starts skip the JVM run."""
    if (cfg.data_dir / "meta.properties").is_file():
        return
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
    pristine = cfg.state_dir / f"pristine-data-{cfg.version}"
    if (pristine / "meta.properties").is_file():
        shutil.copytree(pristine, cfg.data_dir)
        return
    argv = [
        java,
        "-Xmx256m",
        QUICK_START_JIT,  # a one-shot tool
        f"-Dkafka.logs.dir={cfg.logs_dir.resolve()}",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        random_cluster_id(),
        "-c",
        str(cfg.properties_path.resolve()),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        lines = (result.stdout + "\n" + result.stderr).splitlines()
        raise DevstackError(
            f"formatting Kafka storage in {cfg.data_dir} failed: "
            f"{processes.shorten(processes.relevant_line(lines))}",
            f"delete {cfg.state_dir} and retry",
        )
    shutil.rmtree(pristine, ignore_errors=True)
    shutil.copytree(cfg.data_dir, pristine)


def start_kafka(cfg: KafkaConfig) -> processes.Started:
    """Start the broker (or reuse ours if it already runs) and wait until it serves."""
    began = time.monotonic()
    pid = running_pid(cfg)
    if pid is not None:
        if processes.wait_until(lambda: processes.port_open(cfg.host, cfg.port), START_TIMEOUT):
            return processes.Started(pid, reused=True, seconds=time.monotonic() - began)
        stop_kafka(cfg)
    processes.remove_file(cfg.pidfile)

    root = cfg.root()
    java = find_java()
    processes.require_port_free(cfg.host, cfg.port, cfg.port_env)
    processes.require_port_free(cfg.host, cfg.controller_port, cfg.controller_port_env)
    libs = ensure_jars(root, cfg.version)
    log4j = (root / "deploy" / "kafka" / "log4j2.properties").resolve()
    template = (root / "deploy" / "kafka" / "server.properties.template").read_text("utf-8")

    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    cfg.properties_path.write_text(render_server_properties(cfg, template), encoding="utf-8")
    _format_storage(cfg, java, libs, log4j)

    offset = cfg.server_log.stat().st_size if cfg.server_log.exists() else 0
    proc = processes.spawn_detached(
        java_argv(cfg, java, libs, log4j), cfg.stdout_log, env=dict(os.environ), cwd=cfg.state_dir
    )
    processes.write_pidfile(cfg.pidfile, proc.pid)

    def ready() -> bool:
        if proc.poll() is not None:
            return True
        return processes.port_open(cfg.host, cfg.port) and _log_has_started(cfg, offset)

    processes.wait_until(ready, START_TIMEOUT, interval=0.25)
    if proc.poll() is not None:
        processes.remove_file(cfg.pidfile)
        raise DevstackError(
            f"Kafka exited during start-up (code {proc.returncode}): {_failure_line(cfg)}",
            f"see {cfg.server_log} and {cfg.stdout_log}",
        )
    if not ready():
        stop_kafka(cfg)
        raise DevstackError(
            f"Kafka did not start within {START_TIMEOUT:.0f}s: {_failure_line(cfg)}",
            f"see {cfg.server_log}",
        )
    return processes.Started(proc.pid, reused=False, seconds=time.monotonic() - began)


def stop_kafka(cfg: KafkaConfig, *, sweep: bool = False) -> bool:
    """Stop our broker (SIGTERM, then SIGKILL after 30 s). True if one was running.

    With ``sweep`` also brokers of this state dir that the pidfile does not name (a start
    interrupted before the pidfile was written); they are found by the state dir's path.
    """
    pid = processes.read_pidfile(cfg.pidfile)
    stopped = pid is not None and processes.terminate(pid, cfg.markers(), STOP_TIMEOUT)
    if sweep:
        for other in processes.find_pids(cfg.markers()):
            stopped = processes.terminate(other, cfg.markers(), STOP_TIMEOUT) or stopped
    processes.remove_file(cfg.pidfile)
    return stopped


def wipe_data(cfg: KafkaConfig) -> None:
    """Remove the broker's data (topics, offsets); it must not be running."""
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
