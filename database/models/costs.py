"""What OpenAI cost per UTC day and client: the daily budgets and the per-lot estimate are read from here."""
from __future__ import annotations

from datetime import date

from sqlalchemy import Date, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from database.models.base import Base


class CostLedger(Base):
    """One row per UTC day, mode (``sync`` or ``batch``) and client: dollars spent and lots completed. The
    deployment's figure for a day is the sum of its rows."""
    __tablename__ = "cost_ledger"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    mode: Mapped[str] = mapped_column(String(8), primary_key=True)
    # the client whose request or job spent it ("default": the implicit client of SHARED_KEY)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True, default="default",
                                           server_default="default")
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    lots: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
