"""A record that reaches Postgres and is refused there, for the poison tests (issue 28).

The shared bounds (:mod:`clm_domain.bounds`) make the engine's decoder refuse the values
Postgres used to refuse (offsets past ±14:00, year 1), and sums are ``numeric(1000,4)``, so no
event a producer can write fails inside Postgres any more. To still prove that a batch failing
there on one record is bisected and only that record dead-lettered, a test installs this
trigger in its own database: inserting an event whose id starts with :data:`REFUSED` into
``customer_events`` raises SQLSTATE :data:`REFUSED_SQLSTATE` (``numeric_value_out_of_range``,
class 22: permanent); every other row passes. Postgres raises it inside the engine's one
write statement, so the whole batch fails, as a real data exception would.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

#: the prefix of the event ids the trigger refuses
REFUSED = "refused-by-pg"
#: the SQLSTATE it raises (a data exception: permanent for ``clm_infra.failures``)
REFUSED_SQLSTATE = "22003"

_FUNCTION = f"""
CREATE FUNCTION t_refuse_marked_event() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    IF NEW.event_id LIKE '{REFUSED}%' THEN
        RAISE EXCEPTION 'event % refused by the test trigger', NEW.event_id
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    RETURN NEW;
END
$body$
"""
_TRIGGER = """
CREATE TRIGGER t_refuse_marked_event BEFORE INSERT ON customer_events
    FOR EACH ROW EXECUTE FUNCTION t_refuse_marked_event()
"""


async def refuse_marked_events(db: AsyncEngine) -> None:
    """Install the trigger in ``db``'s database (a test's own)."""
    async with db.begin() as conn:
        await conn.exec_driver_sql(_FUNCTION)
        await conn.exec_driver_sql(_TRIGGER)
