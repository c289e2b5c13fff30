"""Fixtures shared by the Vault PKI activity tests: a real OpenBao and the host API emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hvac
import pytest
from kubernetes import client as k8s

from activities.kvm.provider import KvmProvider
from activities.pki.vault import VaultPki
from activities.providers.contract import Providers
from models.spec import ClusterSpec
from tests.servers import OpenBao
from tests.specs import small_kvm


@pytest.fixture
def vault(openbao: OpenBao) -> hvac.Client:
    return hvac.Client(url=openbao.addr, token=openbao.token)


@pytest.fixture
def core(kube_emulator: Any) -> Iterator[k8s.CoreV1Api]:
    with k8s.ApiClient(k8s.Configuration(host=kube_emulator.url)) as api:
        yield k8s.CoreV1Api(api)


@pytest.fixture
def pki(vault: hvac.Client, core: k8s.CoreV1Api) -> VaultPki:
    api = core.api_client
    return VaultPki(vault, Providers([KvmProvider(api)]))


@pytest.fixture
def spec() -> ClusterSpec:
    return small_kvm()
