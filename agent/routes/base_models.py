"""The base models this server can give a new agent (what `lifelong models list` shows), for choosing one."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from agent.deps import CurrentKey, ServicesDep
from agent.schemas import BaseModelList, BaseModelPublic
from learner.base import base_models

router = APIRouter(prefix="/v1", tags=["agents"])


@router.get("/base-models", response_model=BaseModelList)
async def list_base_models(services: ServicesDep, _: CurrentKey) -> BaseModelList:
    """Installed or not (with the command that installs one); `default` is what an agent gets when it names none."""
    rows = await run_in_threadpool(base_models)  # sizes stat the installed files
    return BaseModelList(default=services.default_base,
                         data=[BaseModelPublic.model_validate(row) for row in rows])
