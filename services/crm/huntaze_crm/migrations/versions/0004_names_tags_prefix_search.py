"""What a new creator trips over: the creator's own name for a fan apart from the platform's,
tags compared case-insensitively, and search by word prefix.

- `fans.custom_display_name`: the creator's name for the fan, which a platform sync never
  overwrites (`display_name` stays the platform's); both are searched.
- `crm.tag_keys(tags)`: the tags lower-cased, indexed, so the tag filters ignore case; tags
  that differed only in case are merged (the first spelling kept).
- `crm.prefix_tsquery(query)`: a web-search query whose every word also matches as a prefix
  (`Mar` finds Marco), and a `lower(name) LIKE 'prefix%'` index on the name shown.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fans_search_function(names: str) -> str:
    """The trigger function filling `fans.search_vector`: `names` (SQL over `NEW`) weigh
    most, then tags, then email and notes."""
    return f"""
CREATE OR REPLACE FUNCTION crm.fans_search_vector() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  NEW.search_vector :=
    setweight(to_tsvector('simple', {names}), 'A')
    || setweight(to_tsvector('simple', array_to_string(NEW.tags, ' ')), 'B')
    || setweight(to_tsvector('simple', NEW.email || ' ' || NEW.notes), 'C');
  RETURN NEW;
END
$body$
"""


# Immutable (lower-casing depends on nothing but its input), so it can be indexed.
TAG_KEYS_FUNCTION = """
CREATE FUNCTION crm.tag_keys(tags text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $body$ SELECT ARRAY(SELECT lower(tag) FROM unnest(tags) AS tag) $body$
"""
# Every lexeme of the parsed query (quoted in the tsquery's text form, quotes inside doubled)
# gets the prefix mark `:*`; phrases, OR and negation keep their meaning.
PREFIX_TSQUERY_FUNCTION = """
CREATE FUNCTION crm.prefix_tsquery(query text) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $body$
SELECT regexp_replace(
    websearch_to_tsquery('simple'::regconfig, query)::text,
    '(''(?:[^'']|'''')*'')', '\\1:*', 'g'
)::tsquery
$body$
"""
MERGE_CASE_DUPLICATE_TAGS = """
UPDATE crm.fans AS f
SET tags = ARRAY(
    SELECT (array_agg(t.tag ORDER BY t.n))[1]
    FROM unnest(f.tags) WITH ORDINALITY AS t(tag, n)
    GROUP BY lower(t.tag)
    ORDER BY min(t.n)
)
WHERE cardinality(f.tags)
    > (SELECT count(DISTINCT lower(tag)) FROM unnest(f.tags) AS tag)
"""
SHOWN_NAME = "lower(coalesce(nullif(custom_display_name, ''), display_name))"


def _trigger(columns: str) -> str:
    return (
        f"CREATE TRIGGER fans_search_vector BEFORE INSERT OR UPDATE OF {columns} ON crm.fans "
        "FOR EACH ROW EXECUTE FUNCTION crm.fans_search_vector()"
    )


def upgrade() -> None:
    op.add_column(
        "fans",
        sa.Column("custom_display_name", sa.Text(), server_default="", nullable=False),
        schema="crm",
    )
    op.execute("DROP TRIGGER fans_search_vector ON crm.fans")
    op.execute(
        _fans_search_function(
            "NEW.custom_display_name || ' ' || NEW.display_name || ' ' || NEW.handle"
        )
    )
    op.execute(_trigger("display_name, custom_display_name, handle, tags, email, notes"))
    op.execute(MERGE_CASE_DUPLICATE_TAGS)
    op.execute(TAG_KEYS_FUNCTION)
    op.drop_index("ix_fans_tags", table_name="fans", schema="crm", postgresql_using="gin")
    op.execute("CREATE INDEX ix_fans_tag_keys ON crm.fans USING gin (crm.tag_keys(tags))")
    op.execute(PREFIX_TSQUERY_FUNCTION)
    op.execute(
        f"CREATE INDEX ix_fans_creator_id_shown_name ON crm.fans (creator_id, {SHOWN_NAME} "
        "text_pattern_ops)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX crm.ix_fans_creator_id_shown_name")
    op.execute("DROP FUNCTION crm.prefix_tsquery(text)")
    op.execute("DROP INDEX crm.ix_fans_tag_keys")
    op.execute("DROP FUNCTION crm.tag_keys(text[])")
    op.create_index(
        "ix_fans_tags", "fans", ["tags"], unique=False, schema="crm", postgresql_using="gin"
    )
    op.execute("DROP TRIGGER fans_search_vector ON crm.fans")
    op.execute(_fans_search_function("NEW.display_name || ' ' || NEW.handle"))
    op.execute(_trigger("display_name, handle, tags, email, notes"))
    # The creator's names for fans replace the platform's: the one name the schema had.
    op.execute(
        "UPDATE crm.fans SET display_name = custom_display_name WHERE custom_display_name <> ''"
    )
    op.drop_column("fans", "custom_display_name", schema="crm")
