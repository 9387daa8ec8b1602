"""``evroute export``: the routes as Knative or Dapr manifests for a cluster."""

from __future__ import annotations

import re

import click

from evroute.cli.common import ctx_obj
from evroute.errors import InvalidInput

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _check_name(option: str, value: str | None) -> None:
    """Kubernetes rejects names that are not DNS labels; say so here instead of at apply time."""
    if value is not None and not _DNS_LABEL.match(value):
        raise InvalidInput(
            f"{option} {value!r} is not a valid name (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63)"
        )


def _emit(manifests: list[dict[str, object]], notes: list[str]) -> None:
    """Manifests on stdout as one YAML stream; what the target cannot express on stderr."""
    from evroute.export import dump_stream

    if manifests:
        click.echo(dump_stream(manifests), nl=False)
    for note in notes:
        click.echo(f"Warning: {note}", err=True)


@click.group()
def export() -> None:
    """Print the routes as manifests for a cluster; what the target cannot express is listed on
    stderr, never dropped silently.

    \b
      evroute export knative --namespace shop > knative.yaml
      evroute export dapr > dapr.yaml
    """


@export.command("knative")
@click.option("--namespace", metavar="NS", help="metadata.namespace of every manifest.")
@click.option(
    "--service-refs",
    is_flag=True,
    help="Write subscriber.ref (a Service named in services:) instead of the local URI.",
)
def knative_cmd(namespace: str | None, service_refs: bool) -> None:
    """Knative Eventing manifests: a Broker per broker and a Trigger per route.

    \b
      evroute export knative --namespace shop --service-refs | kubectl apply -f -
    """
    from evroute.export.knative import to_knative
    from evroute.routes.load import load_routes

    _check_name("--namespace", namespace)
    routeset = load_routes(ctx_obj().routes, resolve=False)
    _emit(*to_knative(routeset, namespace, service_refs=service_refs))


@export.command("dapr")
@click.option("--namespace", metavar="NS", help="metadata.namespace of every manifest.")
@click.option(
    "--pubsub", default="pubsub", show_default=True, metavar="NAME", help="The Dapr pub/sub component."
)
def dapr_cmd(namespace: str | None, pubsub: str) -> None:
    """Dapr manifests: a v2alpha1 Subscription per route (topic = broker) and one Resiliency
    with each route's retry, timeout and circuit breaker policy.

    \b
      evroute export dapr --pubsub orders-pubsub > dapr.yaml
    """
    from evroute.export.dapr import to_dapr
    from evroute.routes.load import load_routes

    _check_name("--namespace", namespace)
    _check_name("--pubsub", pubsub)
    routeset = load_routes(ctx_obj().routes, resolve=False)
    _emit(*to_dapr(routeset, namespace, pubsub=pubsub))
