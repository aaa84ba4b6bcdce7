"""Keys, versions of their material, aliases and tags."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import cached_property

from django.db import models


class KeyManager(models.TextChoices):
    CUSTOMER = "CUSTOMER", "Customer managed"
    AWS = "AWS", "Service managed"
    # Platform owned keys protect kmsweb's own secrets; never on the wire.
    OWNED = "OWNED", "Platform owned"


class KeyState(models.TextChoices):
    CREATING = "Creating"
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"
    PENDING_IMPORT = "PendingImport"
    # A multi-Region primary key scheduled for deletion that still has replicas:
    # its waiting period begins when the last replica is deleted.
    PENDING_REPLICA_DELETION = "PendingReplicaDeletion"
    UNAVAILABLE = "Unavailable"
    UPDATING = "Updating"


class KeySpec(models.TextChoices):
    SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT", "SYMMETRIC_DEFAULT"
    RSA_2048 = "RSA_2048", "RSA_2048"
    RSA_3072 = "RSA_3072", "RSA_3072"
    RSA_4096 = "RSA_4096", "RSA_4096"
    ECC_NIST_P256 = "ECC_NIST_P256", "ECC_NIST_P256"
    ECC_NIST_P384 = "ECC_NIST_P384", "ECC_NIST_P384"
    ECC_NIST_P521 = "ECC_NIST_P521", "ECC_NIST_P521"
    ECC_SECG_P256K1 = "ECC_SECG_P256K1", "ECC_SECG_P256K1"
    HMAC_224 = "HMAC_224", "HMAC_224"
    HMAC_256 = "HMAC_256", "HMAC_256"
    HMAC_384 = "HMAC_384", "HMAC_384"
    HMAC_512 = "HMAC_512", "HMAC_512"
    ML_DSA_44 = "ML_DSA_44", "ML_DSA_44"
    ML_DSA_65 = "ML_DSA_65", "ML_DSA_65"
    ML_DSA_87 = "ML_DSA_87", "ML_DSA_87"
    ECC_NIST_EDWARDS25519 = "ECC_NIST_EDWARDS25519", "ECC_NIST_EDWARDS25519"
    ML_KEM_512 = "ML_KEM_512", "ML_KEM_512"
    ML_KEM_768 = "ML_KEM_768", "ML_KEM_768"
    ML_KEM_1024 = "ML_KEM_1024", "ML_KEM_1024"


class KeyUsage(models.TextChoices):
    ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
    SIGN_VERIFY = "SIGN_VERIFY"
    GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"
    KEY_AGREEMENT = "KEY_AGREEMENT"
    ENCAPSULATE_DECAPSULATE = "ENCAPSULATE_DECAPSULATE"


class KeyOrigin(models.TextChoices):
    AWS_KMS = "AWS_KMS"
    EXTERNAL = "EXTERNAL"
    # Keys of custom key stores (keys.models.CustomKeyStore).
    AWS_CLOUDHSM = "AWS_CLOUDHSM"
    EXTERNAL_KEY_STORE = "EXTERNAL_KEY_STORE"


class MultiRegionKeyType(models.TextChoices):
    PRIMARY = "PRIMARY"
    REPLICA = "REPLICA"


class ExpirationModel(models.TextChoices):
    """Whether imported key material expires (AWS's ExpirationModelType)."""

    EXPIRES = "KEY_MATERIAL_EXPIRES"
    DOES_NOT_EXPIRE = "KEY_MATERIAL_DOES_NOT_EXPIRE"


class KeyQuerySet(models.QuerySet["Key"]):
    def visible(self) -> KeyQuerySet:
        """Keys that exist on the wire: not platform owned, not yet deleted."""
        return self.exclude(manager=KeyManager.OWNED).filter(deleted_at__isnull=True)

    def enabled(self) -> KeyQuerySet:
        return self.filter(state=KeyState.ENABLED)

    def due_for_rotation(self, now: datetime) -> KeyQuerySet:
        """Keys whose automatic rotation date has come: customer managed keys
        with rotation enabled, service managed keys (always on, yearly) and
        platform owned keys (yearly). The key state is not filtered here:
        add ``.enabled()``."""
        schedule = (
            models.Q(manager=KeyManager.CUSTOMER, rotation_enabled=True)
            | models.Q(manager=KeyManager.AWS)
            | models.Q(manager=KeyManager.OWNED, rotation_enabled=True)
        )
        # A multi-Region key rotates through its primary, which hands the new
        # material to its replicas; replicas have no schedule of their own.
        return self.filter(schedule, deleted_at__isnull=True, next_rotation_at__lte=now).exclude(
            multi_region_type=MultiRegionKeyType.REPLICA
        )

    def rotatable(self) -> KeyQuerySet:
        """Keys automatic rotation can apply to: symmetric encryption keys with
        kmsweb-made material (AWS refuses EnableKeyRotation on asymmetric, HMAC
        and imported-material keys)."""
        return self.filter(key_spec=KeySpec.SYMMETRIC_DEFAULT, origin=KeyOrigin.AWS_KMS)

    def due_for_deletion(self, now: datetime) -> KeyQuerySet:
        """Keys pending deletion whose waiting period has ended, not yet deleted."""
        return self.filter(state=KeyState.PENDING_DELETION, deletion_date__lte=now, deleted_at__isnull=True)

    def material_expired(self, now: datetime) -> KeyQuerySet:
        """Keys with imported material whose ValidTo is ``now`` or past and whose
        material is still there: the current material's (``Key.valid_to``,
        cleared when it is deleted) or another material's own."""
        expiring = KeyMaterial.objects.filter(valid_to__lte=now, destroyed_at__isnull=True).values("key_id")
        return self.filter(
            models.Q(valid_to__lte=now) | models.Q(pk__in=expiring), origin=KeyOrigin.EXTERNAL, deleted_at__isnull=True
        )


class Key(models.Model):
    """A KMS key. Its material lives in ``KeyMaterial`` versions, wrapped.

    A deleted key stays as a tombstone (``deleted_at`` set, material gone) so
    that the audit trail keeps naming it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        "policies.Account", null=True, blank=True, on_delete=models.PROTECT, related_name="keys"
    )
    region = models.CharField(max_length=32)
    description = models.CharField(max_length=8192, blank=True)
    key_spec = models.CharField(max_length=32, choices=KeySpec.choices, default=KeySpec.SYMMETRIC_DEFAULT)
    key_usage = models.CharField(max_length=32, choices=KeyUsage.choices, default=KeyUsage.ENCRYPT_DECRYPT)
    origin = models.CharField(max_length=24, choices=KeyOrigin.choices, default=KeyOrigin.AWS_KMS)
    manager = models.CharField(max_length=10, choices=KeyManager.choices, default=KeyManager.CUSTOMER)
    # What a platform owned key protects (e.g. "access-key-secrets"), or the
    # service of a service managed key (e.g. "backup" for alias/aws/backup).
    purpose = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=24, choices=KeyState.choices, default=KeyState.ENABLED)
    policy = models.TextField(blank=True)
    created_at = models.DateTimeField()
    deletion_date = models.DateTimeField(null=True, blank=True)
    pending_window_days = models.PositiveSmallIntegerField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    rotation_enabled = models.BooleanField(default=False)
    rotation_period_days = models.PositiveSmallIntegerField(null=True, blank=True)
    next_rotation_at = models.DateTimeField(null=True, blank=True)
    last_rotated_at = models.DateTimeField(null=True, blank=True)
    # Approvals a grant request for this key needs (kmsweb's addition): 1 or 2.
    grant_approvals_required = models.PositiveSmallIntegerField(default=1)
    current_material = models.ForeignKey(
        "KeyMaterial", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Imported material (Origin EXTERNAL): how the current import expires.
    # Both are cleared when the material is deleted or expires.
    expiration_model = models.CharField(max_length=32, choices=ExpirationModel.choices, blank=True)
    valid_to = models.DateTimeField(null=True, blank=True)
    # Keys of a custom key store (Origin AWS_CLOUDHSM or EXTERNAL_KEY_STORE):
    # their material lives in the store, never in ``KeyMaterial.wrapped``.
    custom_key_store = models.ForeignKey(
        "CustomKeyStore", null=True, blank=True, on_delete=models.PROTECT, related_name="keys"
    )
    # EXTERNAL_KEY_STORE keys: the key's id in the external key manager.
    xks_key_id = models.CharField(max_length=128, blank=True)
    # While the key's store is disconnected the key is Unavailable; this is
    # the state (Enabled or Disabled) it takes again when the store connects.
    state_when_connected = models.CharField(max_length=24, choices=KeyState.choices, blank=True)
    # Multi-Region keys: related keys (one primary, replicas in other regions
    # of the same account) share this id, their wire key id ``mrk-<hex>``, and
    # their material versions (each row holds its own wrapped copy).
    multi_region_id = models.UUIDField(null=True, blank=True)
    multi_region_type = models.CharField(max_length=8, choices=MultiRegionKeyType.choices, blank=True)

    objects = KeyQuerySet.as_manager()

    # Set by the selector when the request named the key by an alias (not stored).
    requested_as: str | None = None

    class Meta:
        indexes = [
            models.Index(fields=["account", "region", "manager", "created_at"], name="key_list_idx"),
            models.Index(fields=["state", "deletion_date"], name="key_deletion_idx"),
            models.Index(fields=["rotation_enabled", "next_rotation_at"], name="key_rotation_idx"),
            models.Index(fields=["valid_to"], name="key_valid_to_idx", condition=models.Q(valid_to__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(manager="OWNED") | models.Q(account__isnull=False),
                name="key_account_unless_owned",
            ),
            models.UniqueConstraint(
                fields=["purpose"], condition=models.Q(manager="OWNED"), name="key_one_owned_per_purpose"
            ),
            # One live key of a multi-Region key per region.
            models.UniqueConstraint(
                fields=["multi_region_id", "region"],
                condition=models.Q(multi_region_id__isnull=False, deleted_at__isnull=True),
                name="key_one_multi_region_key_per_region",
            ),
            models.CheckConstraint(
                condition=models.Q(multi_region_id__isnull=True, multi_region_type="")
                | models.Q(multi_region_id__isnull=False, multi_region_type__in=["PRIMARY", "REPLICA"]),
                name="key_multi_region_type_iff_id",
            ),
        ]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def key_id(self) -> str:
        """The KeyId on the wire: ``mrk-<32 hex>`` for a multi-Region key, else the row's UUID."""
        if self.multi_region_id is not None:
            return f"mrk-{self.multi_region_id.hex}"
        return str(self.id)

    @property
    def blob_id(self) -> uuid.UUID:
        """The key id a ciphertext blob carries: related multi-Region keys share it,
        so that any of them decrypts what another encrypted."""
        return self.multi_region_id or self.id

    @property
    def is_multi_region(self) -> bool:
        return self.multi_region_id is not None

    @cached_property
    def arn(self) -> str:
        # Platform owned keys belong to no account: their ARN has an empty account field.
        # Region, account and id never change once a key exists: computed once per instance
        # (cached keys serve many requests).
        return f"arn:aws:kms:{self.region}:{self.account_id or ''}:key/{self.key_id}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def deletion_date_or_none(self) -> datetime | None:
        return self.deletion_date if self.state == KeyState.PENDING_DELETION else None


class RotationType(models.TextChoices):
    AUTOMATIC = "AUTOMATIC"
    ON_DEMAND = "ON_DEMAND"


class KeyMaterial(models.Model):
    """One version of a key's material, wrapped by a root key.

    For an asymmetric key the wrapped material is the private key (PKCS#8
    DER) and ``public_key`` holds its public half (DER SubjectPublicKeyInfo),
    which is not secret and is kept in the clear for GetPublicKey and Verify.
    Rotation adds a version and moves ``Key.current_material``; old versions
    stay for Decrypt until the key is deleted.

    A symmetric key with imported material takes new material for on-demand
    rotation: imported with ImportType NEW_KEY_MATERIAL it is a later version
    with no ``rotation_type`` (PENDING_ROTATION) until RotateKeyOnDemand
    makes it current.

    Imported material (Origin EXTERNAL) can be deleted and re-imported: the
    row stays with its version, ``material_id`` and keyed ``fingerprint``
    while ``wrapped`` is emptied and ``destroyed_at`` set, so re-importing the
    same material fills the same version again and ciphertexts made before
    the deletion (which name the key and this version) decrypt again.
    """

    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="materials")
    version = models.PositiveIntegerField()
    # Unique per key: related multi-Region keys hold the same material under the same id.
    material_id = models.CharField(max_length=64, db_index=True)
    wrapped = models.BinaryField()
    public_key = models.BinaryField(null=True, blank=True)
    root_key_id = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    rotation_type = models.CharField(max_length=10, choices=RotationType.choices, blank=True)
    # Imported material only: "<platform key version>:<HMAC-SHA256 hex>" of the
    # material (keys.crypto.importing.material_fingerprint), never the material.
    fingerprint = models.CharField(max_length=80, blank=True)
    # KeyMaterialDescription of the last import of this material.
    description = models.CharField(max_length=256, blank=True)
    # Imported material that was deleted or expired: ``wrapped`` is empty.
    destroyed_at = models.DateTimeField(null=True, blank=True)
    # Imported material: how this import expires (ListKeyRotations shows it per material).
    expiration_model = models.CharField(max_length=32, choices=ExpirationModel.choices, blank=True)
    valid_to = models.DateTimeField(null=True, blank=True)
    # When RotateKeyOnDemand made this imported material current.
    rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "version"], name="material_unique_version"),
            models.UniqueConstraint(fields=["key", "material_id"], name="material_unique_id_per_key"),
        ]
        ordering = ["key", "version"]

    def __str__(self) -> str:
        return f"{self.key_id}#{self.version}"

    @property
    def pending_rotation(self) -> bool:
        """Imported for on-demand rotation and not yet made current (AWS's PENDING_ROTATION)."""
        return self.version > 1 and not self.rotation_type


class ImportParameters(models.Model):
    """One GetParametersForImport answer: an RSA wrapping key pair for one key.

    The private half is wrapped by the root key (AAD binds this row's id and
    the key id); the import token handed to the client is an AES-GCM blob
    under a platform owned key naming this row, the key, the wrapping
    algorithm and spec, and ``valid_to`` (keys.services.importing). A token
    is spent by the import that succeeds with it (``used_at``); rows are
    removed by the expiry job once ``valid_to`` has passed.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="import_parameters")
    wrapping_algorithm = models.CharField(max_length=32)
    wrapping_key_spec = models.CharField(max_length=16)
    wrapped_private_key = models.BinaryField()
    root_key_id = models.CharField(max_length=64)
    public_key = models.BinaryField()
    created_at = models.DateTimeField()
    valid_to = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["valid_to"], name="import_params_valid_to_idx")]

    def __str__(self) -> str:
        return f"{self.key_id} {self.wrapping_algorithm}/{self.wrapping_key_spec}"


class Alias(models.Model):
    """A friendly name (``alias/...``) for one key in one account and region."""

    account = models.ForeignKey("policies.Account", on_delete=models.PROTECT, related_name="aliases")
    region = models.CharField(max_length=32)
    name = models.CharField(max_length=256)
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="aliases")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "region", "name"], name="alias_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:{self.name}"


class Tag(models.Model):
    """A tag on a key."""

    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="tags")
    tag_key = models.CharField(max_length=128)
    tag_value = models.CharField(max_length=256, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "tag_key"], name="tag_unique_key")]
        ordering = ["tag_key"]

    def __str__(self) -> str:
        return f"{self.tag_key}={self.tag_value}"


class CustomKeyStoreType(models.TextChoices):
    AWS_CLOUDHSM = "AWS_CLOUDHSM"
    EXTERNAL_KEY_STORE = "EXTERNAL_KEY_STORE"


class ConnectionState(models.TextChoices):
    CONNECTED = "CONNECTED"
    CONNECTING = "CONNECTING"
    DISCONNECTED = "DISCONNECTED"
    DISCONNECTING = "DISCONNECTING"
    FAILED = "FAILED"


class CustomKeyStore(models.Model):
    """A custom key store: key material held outside kmsweb's database.

    AWS_CLOUDHSM stores are PKCS#11 tokens: ``cloud_hsm_cluster_id`` is the
    label of a token of the library ``KMSWEB_PKCS11_LIBRARY``, and the
    KeyStorePassword is the token's user PIN, kept only encrypted under a
    platform owned key (``secret_ciphertext``). EXTERNAL_KEY_STORE stores
    are XKS proxies reached over HTTPS; the secret of their SigV4
    authentication credential is kept the same way.
    """

    id = models.CharField(primary_key=True, max_length=64)
    account = models.ForeignKey("policies.Account", on_delete=models.PROTECT, related_name="custom_key_stores")
    region = models.CharField(max_length=32)
    name = models.CharField(max_length=256)
    store_type = models.CharField(max_length=24, choices=CustomKeyStoreType.choices)
    connection_state = models.CharField(
        max_length=16, choices=ConnectionState.choices, default=ConnectionState.DISCONNECTED
    )
    connection_error_code = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()
    # AWS_CLOUDHSM
    cloud_hsm_cluster_id = models.CharField(max_length=24, blank=True)
    trust_anchor_certificate = models.TextField(blank=True)
    # EXTERNAL_KEY_STORE
    xks_proxy_uri_endpoint = models.CharField(max_length=128, blank=True)
    xks_proxy_uri_path = models.CharField(max_length=128, blank=True)
    xks_proxy_connectivity = models.CharField(max_length=32, blank=True)
    xks_proxy_access_key_id = models.CharField(max_length=30, blank=True)
    # The token PIN (AWS_CLOUDHSM) or the XKS proxy's raw secret access key,
    # encrypted by keys.services.platform.platform_encrypt.
    secret_ciphertext = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "region", "name"], name="cks_unique_name"),
            models.UniqueConstraint(
                fields=["cloud_hsm_cluster_id"],
                condition=models.Q(store_type="AWS_CLOUDHSM"),
                name="cks_one_store_per_token",
            ),
        ]
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.id} ({self.name})"
