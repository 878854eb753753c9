"""Dependencies of the routers: settings, store, scorer, triager, feed broadcaster, indicator packs.

Authentication (the caller's token and role) is in :mod:`riskengine.service.auth`.

The instances live on ``app.state`` (made by :func:`riskengine.service.main.create_app`); tests
replace any of them with ``app.dependency_overrides[get_x] = ...``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from riskengine.queue import QueueConfig
from riskengine.service.events import Broadcaster
from riskengine.service.packs import PackSource
from riskengine.service.scoring import ScanTriager, Scorer
from riskengine.service.settings import Settings
from riskengine.store import Store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_scorer(request: Request) -> Scorer:
    return request.app.state.scorer


def get_triager(request: Request) -> ScanTriager:
    return request.app.state.triager


def get_broadcaster(request: Request) -> Broadcaster:
    return request.app.state.broadcaster


def get_packs(request: Request) -> PackSource:
    return request.app.state.packs


def get_queue_config(settings: Annotated[Settings, Depends(get_settings)]) -> QueueConfig:
    return settings.queue.to_config()


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
TriagerDep = Annotated[ScanTriager, Depends(get_triager)]
BroadcasterDep = Annotated[Broadcaster, Depends(get_broadcaster)]
QueueConfigDep = Annotated[QueueConfig, Depends(get_queue_config)]
PacksDep = Annotated[PackSource, Depends(get_packs)]
