"""The key operations: one audited, authorized service function each."""

from keys.services.aliases import alias_create, alias_delete, alias_list, alias_update
from keys.services.asymmetric import (
    key_derive_shared_secret,
    key_generate_data_key_pair,
    key_generate_mac,
    key_get_public_key,
    key_sign,
    key_verify,
    key_verify_mac,
)
from keys.services.cryptography import (
    key_decrypt,
    key_encrypt,
    key_generate_data_key,
    key_reencrypt,
    random_generate,
)
from keys.services.encapsulation import Encapsulation, key_decapsulate, key_encapsulate
from keys.services.grant_approvals import GRANT_APPROVALS_CHOICES, key_set_grant_approvals
from keys.services.importing import (
    key_delete_imported_material,
    key_get_parameters_for_import,
    key_import_material,
    keys_expire_imported_material,
)
from keys.services.jobs import keys_delete_expired, keys_rotate_due
from keys.services.key_stores import (
    custom_key_store_connect,
    custom_key_store_create,
    custom_key_store_delete,
    custom_key_store_describe,
    custom_key_store_disconnect,
    custom_key_store_update,
)
from keys.services.lifecycle import (
    key_cancel_deletion,
    key_create,
    key_describe,
    key_describe_metadata,
    key_disable,
    key_enable,
    key_get_policy,
    key_list,
    key_list_policies,
    key_put_policy,
    key_schedule_deletion,
    key_update_description,
)
from keys.services.multi_region import key_replicate, key_update_primary_region
from keys.services.rotation import (
    key_disable_rotation,
    key_enable_rotation,
    key_list_rotations,
    key_rotate,
    key_rotation_status,
)
from keys.services.service_keys import service_key_get_or_create
from keys.services.tags import key_list_tags, key_tag, key_untag
from keys.services.usage import key_last_usage

__all__ = [
    "GRANT_APPROVALS_CHOICES",
    "key_set_grant_approvals",
    "alias_create",
    "alias_delete",
    "alias_list",
    "alias_update",
    "custom_key_store_connect",
    "custom_key_store_create",
    "custom_key_store_delete",
    "custom_key_store_describe",
    "custom_key_store_disconnect",
    "custom_key_store_update",
    "key_cancel_deletion",
    "key_create",
    "key_decrypt",
    "Encapsulation",
    "key_decapsulate",
    "key_delete_imported_material",
    "key_encapsulate",
    "key_derive_shared_secret",
    "key_generate_data_key_pair",
    "key_generate_mac",
    "key_get_public_key",
    "key_sign",
    "key_verify",
    "key_verify_mac",
    "key_describe",
    "key_describe_metadata",
    "key_disable",
    "key_disable_rotation",
    "key_enable",
    "key_get_parameters_for_import",
    "key_get_policy",
    "key_import_material",
    "key_put_policy",
    "key_enable_rotation",
    "key_encrypt",
    "key_generate_data_key",
    "key_last_usage",
    "key_list",
    "key_list_policies",
    "key_list_rotations",
    "key_list_tags",
    "key_reencrypt",
    "key_replicate",
    "key_rotate",
    "key_rotation_status",
    "key_schedule_deletion",
    "key_tag",
    "key_untag",
    "service_key_get_or_create",
    "key_update_description",
    "key_update_primary_region",
    "keys_delete_expired",
    "keys_expire_imported_material",
    "keys_rotate_due",
    "random_generate",
]
