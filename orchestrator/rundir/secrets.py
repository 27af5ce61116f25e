"""Per-run secrets: generated at launch into RUN_DIR/secrets/ (directory 0700, files 0600) and
handed to the run's processes through the environment of the driver that starts them.

Never in config.json, plans, scripts, argv, logs or state.json: a plan names only the variable
(`ADMIN_KEY_ENV`, `ETCD_AUTH_PASSWORD`), the dry-run shows `<secret:NAME>`. Every driver of the
run (the run's own, an attached job's, a rollover copy's, the here-driver) reads the same files:
attached and worker-job run directories live under the run directory, and their plans name it
(`plan.job.run_dir`)."""

from __future__ import annotations

import os
import secrets as random
import stat
from collections.abc import MutableMapping
from pathlib import Path

from orchestrator.core.effects import CommandRunner
from orchestrator.core.errors import OrchestratorError

SECRETS_DIR = "secrets"
ADMIN_KEY = "admin_key"  # the router's / SMG's control-plane admin key
ETCD_PASSWORD = "etcd_password"  # the password of etcd's root user
NAMES = (ADMIN_KEY, ETCD_PASSWORD)
ADMIN_KEY_ENV = "ORCHESTRATOR_ADMIN_KEY"
# The clients' key (frontend.api_key_env): yours, not generated; copied here at launch so that
# every driver of the run (attached jobs, rollover copies) hands it over like the others.
API_KEY = "api_key"
API_KEY_ENV = "ORCHESTRATOR_API_KEY"
# The variables Dynamo 1.6.1's runtime reads for etcd (lib/runtime/src/transports/etcd.rs:
# ClientOptions::default() logs in with both set).
ETCD_USER_ENV, ETCD_PASSWORD_ENV = "ETCD_AUTH_USERNAME", "ETCD_AUTH_PASSWORD"
ETCD_USER = "root"  # etcd enables auth only once a `root` user with the root role exists
TOKEN_BYTES = 32  # 256 bits, URL-safe (no shell or etcd JSON quoting needed)
# Request-plane mutual TLS (frontend.request_plane_tls): one per-run CA and one certificate for
# every Dynamo process (server and client), named for a fixed server name rather than node
# addresses, which are known only inside the allocation (DYN_TCP_TLS_SERVER_NAME).
TLS_DIR = "tls"
TLS_SERVER_NAME = "orchestrator-run"
TLS_FILES = ("ca.crt", "node.crt", "node.key")
TLS_DAYS = "400"


class SecretsError(OrchestratorError):
    """The run's secrets are missing, unreadable or readable by others."""


def secrets_dir(run_dir: Path, attach_to: str = "") -> Path:
    """RUN_DIR/secrets of the run itself: an attached job's or worker job's driver uses the
    secrets of the run it attaches to."""
    return Path(attach_to or run_dir) / SECRETS_DIR


def placeholder(name: str) -> str:
    """How plans and the dry-run show a secret."""
    return f"<secret:{name}>"


def _write_secret(path: Path, value: str) -> None:
    """A new 0600 file (O_EXCL: never an old one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)


def create_secrets(run_dir: Path, api_key: str = "") -> Path:
    """Generate every secret of a new run, and keep the clients' key when one is given."""
    folder = run_dir / SECRETS_DIR
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)  # mkdir's mode is masked by the umask; 0700 exactly
    for name in NAMES:
        _write_secret(folder / name, random.token_urlsafe(TOKEN_BYTES))
    if api_key:
        _write_secret(folder / API_KEY, api_key)
    return folder


def read_secrets(folder: Path) -> dict[str, str]:
    """The secrets in `folder` by name ({} when the run has none: a run made before they
    existed). Refused when the folder is readable by anyone but its owner."""
    if not folder.is_dir():
        return {}
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        raise SecretsError(f"{folder} has mode {mode:04o}; it must be 0700 (chmod 700 {folder})")
    out = {}
    for name in NAMES:
        try:
            out[name] = (folder / name).read_text().strip()
        except OSError as exc:
            raise SecretsError(
                f"cannot read the run's secret {folder / name}: {exc.strerror}"
            ) from exc
    if (folder / API_KEY).is_file():  # only with frontend.api_key_env
        out[API_KEY] = (folder / API_KEY).read_text().strip()
    return out


def secret_names() -> tuple[str, ...]:
    """Every variable a secret may be handed over as (a child that must not inherit them)."""
    return (ADMIN_KEY_ENV, ETCD_USER_ENV, ETCD_PASSWORD_ENV, API_KEY_ENV)


def secret_env(values: dict[str, str]) -> dict[str, str]:
    """The environment variables the secrets are handed over as."""
    env = {}
    if values.get(ADMIN_KEY):
        env[ADMIN_KEY_ENV] = values[ADMIN_KEY]
    if values.get(ETCD_PASSWORD):
        env[ETCD_USER_ENV], env[ETCD_PASSWORD_ENV] = ETCD_USER, values[ETCD_PASSWORD]
    if values.get(API_KEY):
        env[API_KEY_ENV] = values[API_KEY]
    return env


def export_secrets(run_dir: Path, attach_to: str, environ: MutableMapping[str, str]) -> list[str]:
    """Put the run's secrets into `environ` (the driver's own environment: every process it
    starts inherits it, locally and through srun, which exports the caller's environment);
    the names of the variables set."""
    env = secret_env(read_secrets(secrets_dir(run_dir, attach_to)))
    environ.update(env)
    return sorted(env)


def _openssl(runner: CommandRunner, argv: list[str]) -> None:
    done = runner.run(["openssl", *argv], timeout=30.0)
    if done.returncode != 0:
        raise SecretsError(
            f"openssl {argv[0]} failed (exit {done.returncode}): {done.stderr.strip()}"
        )


def create_tls(run_dir: Path, runner: CommandRunner) -> Path:
    """RUN_DIR/secrets/tls/: a per-run CA's certificate and one P-256 certificate and key signed
    by it for `TLS_SERVER_NAME`, good for server and client use. The CA's key is deleted once
    it signed: nothing else is ever issued for the run."""
    folder = run_dir / SECRETS_DIR / TLS_DIR
    folder.mkdir(mode=0o700)
    ca_key, csr, ext = folder / "ca.key", folder / "node.csr", folder / "ext.cnf"
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        f"subjectAltName=DNS:{TLS_SERVER_NAME}\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    try:
        _openssl(
            runner,
            [
                "req",
                "-x509",
                *ec,
                "-keyout",
                str(ca_key),
                "-out",
                str(folder / "ca.crt"),
                "-days",
                TLS_DAYS,
                "-subj",
                "/CN=orchestrator run CA",
            ],
        )
        _openssl(
            runner,
            [
                "req",
                *ec,
                "-keyout",
                str(folder / "node.key"),
                "-out",
                str(csr),
                "-subj",
                f"/CN={TLS_SERVER_NAME}",
            ],
        )
        _openssl(
            runner,
            [
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(folder / "ca.crt"),
                "-CAkey",
                str(ca_key),
                "-set_serial",
                "1",
                "-out",
                str(folder / "node.crt"),
                "-days",
                TLS_DAYS,
                "-extfile",
                str(ext),
            ],
        )
    finally:
        for leftover in (ca_key, csr, ext):
            leftover.unlink(missing_ok=True)
    for name in TLS_FILES:
        (folder / name).chmod(0o600)
    return folder
