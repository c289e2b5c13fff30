"""Kubernetes REST calls with JSON bodies, through an ``ApiClient``'s own connection, authentication,
retries and rate limit, but not through its generated API methods.

Client v37's generated methods validate every argument with pydantic (``validate_call``), the body
against its model (which the caller had to build from its manifest first), and serialize the model
back to JSON. For the manifests the activities send (a node's Deployment is a few kilobytes) that
cost more worker CPU than the HTTP call; the manifests are plain JSON already, as are the responses
the activities read (``kube_responses.response_json``: a newer API server's fields are not refused).
Errors are the client's own ``ApiException``, so every caller's 404/409 handling and the error
translation (``activities/common/errors.py``) see what the generated methods raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from activities.common.kube_responses import Obj, response_json

JSON: Final = "application/json"
JSON_PATCH: Final = "application/json-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
MERGE_PATCH: Final = "application/merge-patch+json"
LIST_PAGE_SIZE: Final = 250
AUTH_SETTINGS: Final = ["BearerToken"]
"""What every generated method of the core APIs authenticates with (the kubeconfig's token or
client certificate; a client certificate rides on the connection, not on a header)."""


@dataclass(frozen=True)
class KubeResource:
    """One kind of the API: its name in messages, group-version path, plural, and whether it lives
    in a namespace."""

    name: str
    api: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None) -> str:
        parts = [self.api]
        if self.namespaced and namespace:
            parts += ["namespaces", quote(namespace, safe="")]
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
        return "/".join(parts)


NAMESPACES: Final = KubeResource("namespace", "/api/v1", "namespaces", namespaced=False)
SECRETS: Final = KubeResource("secret", "/api/v1", "secrets")
CONFIG_MAPS: Final = KubeResource("configmap", "/api/v1", "configmaps")
SERVICES: Final = KubeResource("service", "/api/v1", "services")
SERVICE_ACCOUNTS: Final = KubeResource("serviceaccount", "/api/v1", "serviceaccounts")
DEPLOYMENTS: Final = KubeResource("deployment", "/apis/apps/v1", "deployments")
INGRESSES: Final = KubeResource("ingress", "/apis/networking.k8s.io/v1", "ingresses")
NETWORK_POLICIES: Final = KubeResource("networkpolicy", "/apis/networking.k8s.io/v1", "networkpolicies")


def delete_options(propagation: str | None = None, uid: str | None = None) -> Obj:
    options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
    if propagation:
        options["propagationPolicy"] = propagation
    if uid:
        options["preconditions"] = {"uid": uid}
    return options


class KubeRest:
    """Read, create, replace, patch, delete and list objects as JSON over one ``ApiClient``."""

    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client

    def read(self, resource: KubeResource, namespace: str | None, name: str) -> Obj:
        return self.call("GET", resource.path(namespace, name))

    def create(self, resource: KubeResource, namespace: str | None, body: Obj) -> Obj:
        return self.call("POST", resource.path(namespace), body=body)

    def replace(self, resource: KubeResource, namespace: str | None, name: str, body: Obj) -> Obj:
        return self.call("PUT", resource.path(namespace, name), body=body)

    def patch(
        self,
        resource: KubeResource,
        namespace: str | None,
        name: str,
        patch: list[Obj] | Obj,
        content_type: str | None = None,
    ) -> Obj:
        """A JSON patch (a list of operations) or, by default for an object, a strategic-merge patch."""
        content_type = content_type or (JSON_PATCH if isinstance(patch, list) else STRATEGIC_MERGE_PATCH)
        return self.call("PATCH", resource.path(namespace, name), body=patch, content_type=content_type)

    def delete(self, resource: KubeResource, namespace: str | None, name: str, options: Obj | None = None) -> Obj:
        return self.call("DELETE", resource.path(namespace, name), body=options or delete_options())

    def list_page(
        self,
        resource: KubeResource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Obj:
        """One page; ``namespace=None`` lists across all namespaces."""
        query: list[tuple[str, Any]] = [
            (key, value)
            for key, value in (
                ("labelSelector", label_selector),
                ("limit", limit),
                ("continue", continue_token),
            )
            if value is not None
        ]
        return self.call("GET", resource.path(namespace), query=query)

    def list_all(
        self, resource: KubeResource, namespace: str | None, label_selector: str, page_size: int = LIST_PAGE_SIZE
    ) -> list[Obj]:
        """Every page of a list by label, one request per ``page_size`` items."""
        items: list[Obj] = []
        token: str | None = None
        while True:
            page = self.list_page(
                resource, namespace, label_selector=label_selector, limit=page_size, continue_token=token
            )
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Obj | list[Obj] | None = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = JSON,
    ) -> Obj:
        headers = {"Accept": JSON} if body is None else {"Accept": JSON, "Content-Type": content_type}
        # param_serialize adds the default headers and authentication (refreshing an expiring token
        # as the generated methods do); the body goes to the REST layer as it is, which dumps it.
        method, url, headers, _, _ = self.api_client.param_serialize(
            method=method, resource_path=path, query_params=query or None, header_params=headers,
            auth_settings=AUTH_SETTINGS,
        )  # fmt: skip
        response: Any = self.api_client.call_api(method, url, header_params=headers, body=body)
        if not 200 <= response.status <= 299:
            try:
                response.read()
            finally:
                response.response.release_conn()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response_json(response.response)
