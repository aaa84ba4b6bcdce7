"""TagResource, UntagResource, ListResourceTags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from audit.services import audited
from compliance.triggers import compliance_evaluation_request
from keys.models import Key, Tag
from keys.selectors import decode_marker, encode_marker
from keys.services.common import check_tags, require_customer_managed, require_not_pending_deletion
from kmsweb.lib.caller import Caller
from kmsweb.lib.errors import TagError
from policies.authorization import authorize


def key_tag(*, caller: Caller, key: Key, tags: Sequence[Mapping[str, str]]) -> None:
    """Add or overwrite tags (at most 50 per key)."""
    with audited(caller, "TagResource", request_parameters={"KeyId": str(key.id), "Tags": list(tags)}) as op:
        op.keys.append(key)
        authorize(
            caller=caller,
            action="kms:TagResource",
            key=key,
            context={
                "aws:TagKeys": [t.get("TagKey", "") for t in tags],
                **{f"aws:RequestTag/{t.get('TagKey', '')}": t.get("TagValue", "") for t in tags},
            },
        )
        require_customer_managed(key, "TagResource")
        require_not_pending_deletion(key)
        existing = set(Tag.objects.filter(key=key).values_list("tag_key", flat=True))
        pairs = check_tags(tags)
        check_tags(tags, existing=len(existing - {k for k, _ in pairs}))
        for tag_key, tag_value in pairs:
            Tag.objects.update_or_create(key=key, tag_key=tag_key, defaults={"tag_value": tag_value})
        compliance_evaluation_request()


def key_untag(*, caller: Caller, key: Key, tag_keys: Sequence[str]) -> None:
    """Remove tags by key; absent keys are ignored, as in AWS."""
    with audited(caller, "UntagResource", request_parameters={"KeyId": str(key.id), "TagKeys": list(tag_keys)}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:UntagResource", key=key, context={"aws:TagKeys": list(tag_keys)})
        require_customer_managed(key, "UntagResource")
        require_not_pending_deletion(key)
        if any(tag_key.lower().startswith("aws:") for tag_key in tag_keys):
            raise TagError("Tags beginning with aws: are reserved")
        Tag.objects.filter(key=key, tag_key__in=list(tag_keys)).delete()
        compliance_evaluation_request()


def key_list_tags(*, caller: Caller, key: Key, limit: int | None = None, marker: str | None = None) -> dict[str, Any]:
    """ListResourceTags, sorted by tag key, paged."""
    limit = limit or 50
    with audited(caller, "ListResourceTags", request_parameters={"KeyId": str(key.id), "Limit": limit}) as op:
        op.keys.append(key)
        authorize(caller=caller, action="kms:ListResourceTags", key=key)
        qs = Tag.objects.filter(key=key).order_by("tag_key")
        if marker:
            (last,) = decode_marker(marker, 1)
            qs = qs.filter(tag_key__gt=last)
        page = list(qs[: limit + 1])
        truncated = len(page) > limit
        page = page[:limit]
        result: dict[str, Any] = {
            "Tags": [{"TagKey": t.tag_key, "TagValue": t.tag_value} for t in page],
            "Truncated": truncated,
        }
        if truncated:
            result["NextMarker"] = encode_marker([page[-1].tag_key])
        return result
