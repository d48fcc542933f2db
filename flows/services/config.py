"""The production profile's settings (ports, worker count) and where its files live."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prnf_core.paths import data_root

# SeaweedFS binds a gRPC port beside each HTTP port, at port + 10000.
GRPC_OFFSET = 10_000
DATA_BUCKET = "prnf-data"
ARTIFACT_BUCKET = "prnf-artifacts"
DATASET_ROOT = f"s3://{DATA_BUCKET}/datasets"
REGION = "us-east-1"

_Port = dict(ge=1024, le=65535)
_WeedPort = dict(ge=1024, le=65535 - GRPC_OFFSET)


class ServicesConfig(BaseModel):
    """Ports and sizes of ``prnf services up``: every server listens on 127.0.0.1 only."""

    model_config = ConfigDict(extra="forbid")

    postgres_port: int = Field(15432, **_Port, description="PostgreSQL 15 port.")
    s3_port: int = Field(8333, **_WeedPort,
                         description="SeaweedFS S3 API port (its gRPC port is this + 10000).")
    weed_master_port: int = Field(9333, **_WeedPort,
                                  description="SeaweedFS master port (gRPC: + 10000).")
    weed_volume_port: int = Field(8380, **_WeedPort,
                                  description="SeaweedFS volume server port (gRPC: + 10000).")
    weed_filer_port: int = Field(8888, **_WeedPort,
                                 description="SeaweedFS filer port (gRPC: + 10000).")
    prefect_port: int = Field(4200, **_Port, description="Prefect server (API and UI) port.")
    mlflow_port: int = Field(5000, **_Port, description="MLflow tracking server port.")
    dask_port: int = Field(8786, **_Port, description="Dask scheduler port.")
    dask_dashboard_port: int = Field(8787, **_Port, description="Dask dashboard port.")
    dask_workers: int = Field(2, ge=1, le=256, description="Dask worker processes (1 thread each).")
    health_timeout: float = Field(
        180.0, gt=0, description="Seconds each service may take to become healthy.")

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServicesConfig:
        taken: dict[int, str] = {}
        for name, port in self.ports().items():
            if port in taken:
                raise ValueError(f"{name}: port {port} is also {taken[port]}")
            taken[port] = name
        return self

    def ports(self) -> dict[str, int]:
        """Every port the profile binds, by the field (or ``<field>+grpc``) that sets it."""
        ports = {name: getattr(self, name) for name in type(self).model_fields
                 if name.endswith("_port")}
        for name in ("s3_port", "weed_master_port", "weed_volume_port", "weed_filer_port"):
            ports[f"{name}+grpc"] = getattr(self, name) + GRPC_OFFSET
        return ports


class Layout:
    """The files of the profile under ``<data root>/services``."""

    def __init__(self, root: Path | None = None) -> None:
        self.data_root = Path(root) if root is not None else data_root()
        self.dir = self.data_root / "services"
        self.state = self.dir / "state.json"
        self.credentials = self.dir / "credentials.env"
        self.s3_config = self.dir / "s3-identities.json"
        self.logs = self.dir / "logs"
        self.postgres = self.dir / "postgres"
        self.weed = self.dir / "seaweedfs"
        self.prefect_home = self.dir / "prefect-home"
        self.dask = self.dir / "dask"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"
