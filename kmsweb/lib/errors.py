"""The errors every service may raise, each knowing its AWS error code.

Services raise these; the API adapter turns them into AWS's JSON error form
(``{"__type": code, "message": ...}``, HTTP 400 unless the class says
otherwise) and the dashboard shows their message inline. Nothing else should
decide an error code. A few errors AWS sends without any ``message`` member
(``wire_message = False``): the message is still kept for the audit trail
and the dashboard.
"""

from __future__ import annotations

from typing import Any


class KmsError(Exception):
    """Base of every error a client may see."""

    code = "KMSInternalException"
    status = 400
    # Whether AWS's answer carries the message (a few bare errors do not).
    wire_message = True

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message
        # Set once an audit event records this error, so it is recorded once.
        self.audited = False
        # For AccessDenied: the policy decision, kept in the audit record.
        self.decision: dict[str, Any] | None = None

    def __str__(self) -> str:
        return self.message


class ValidationError(KmsError):
    """AWS `ValidationException`."""

    code = "ValidationException"


class SerializationError(KmsError):
    """AWS `SerializationException`."""

    code = "SerializationException"


class NotFound(KmsError):
    """AWS `NotFoundException`."""

    code = "NotFoundException"


class AlreadyExists(KmsError):
    """AWS `AlreadyExistsException`."""

    code = "AlreadyExistsException"


class Disabled(KmsError):
    """AWS `DisabledException`."""

    code = "DisabledException"


class InvalidState(KmsError):
    """AWS `KMSInvalidStateException`."""

    code = "KMSInvalidStateException"


class InvalidCiphertext(KmsError):
    """AWS `InvalidCiphertextException`."""

    code = "InvalidCiphertextException"
    wire_message = False


class IncorrectKey(KmsError):
    """AWS `IncorrectKeyException`."""

    code = "IncorrectKeyException"


class InvalidKeyUsage(KmsError):
    """AWS `InvalidKeyUsageException`."""

    code = "InvalidKeyUsageException"


class InvalidArn(KmsError):
    """AWS `InvalidArnException`."""

    code = "InvalidArnException"


class InvalidAliasName(KmsError):
    """AWS `InvalidAliasNameException`."""

    code = "InvalidAliasNameException"


class InvalidMarker(KmsError):
    """AWS `InvalidMarkerException`."""

    code = "InvalidMarkerException"


class MalformedPolicyDocument(KmsError):
    """AWS `MalformedPolicyDocumentException`."""

    code = "MalformedPolicyDocumentException"


class LimitExceeded(KmsError):
    """AWS `LimitExceededException`."""

    code = "LimitExceededException"


class Throttled(KmsError):
    """AWS `ThrottlingException`: a request quota is exceeded (HTTP 400, as AWS answers it)."""

    code = "ThrottlingException"


class TagError(KmsError):
    """AWS `TagException`."""

    code = "TagException"


class UnsupportedOperation(KmsError):
    """AWS `UnsupportedOperationException`."""

    code = "UnsupportedOperationException"


class AccessDenied(KmsError):
    """AWS `AccessDeniedException`."""

    code = "AccessDeniedException"


class UnrecognizedClient(KmsError):
    """AWS `UnrecognizedClientException`."""

    code = "UnrecognizedClientException"


class ExpiredToken(KmsError):
    """AWS `ExpiredTokenException`: temporary credentials past their expiry."""

    code = "ExpiredTokenException"


class InvalidSignature(KmsError):
    """AWS `InvalidSignatureException`."""

    code = "InvalidSignatureException"


class IncompleteSignature(KmsError):
    """AWS `IncompleteSignatureException`."""

    code = "IncompleteSignatureException"


class MissingAuthenticationToken(KmsError):
    """AWS `MissingAuthenticationTokenException`."""

    code = "MissingAuthenticationTokenException"
    status = 403


class RequestTooLarge(KmsError):
    """A request body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``: refused unread."""

    code = "ValidationException"
    status = 413


class UnknownOperation(KmsError):
    """AWS `UnknownOperationException`."""

    code = "UnknownOperationException"


class InternalError(KmsError):
    """AWS `KMSInternalException`."""

    code = "KMSInternalException"
    status = 500


DRY_RUN_MESSAGE = "The request would have succeeded, but the DryRun option is set."


class DryRunOperation(KmsError):
    """AWS `DryRunOperationException` (HTTP 412): the request would have succeeded."""

    code = "DryRunOperationException"
    status = 412

    def __init__(self, message: str = DRY_RUN_MESSAGE) -> None:
        super().__init__(message)


class InvalidGrantToken(KmsError):
    """AWS `InvalidGrantTokenException`."""

    code = "InvalidGrantTokenException"


class InvalidGrantId(KmsError):
    """AWS `InvalidGrantIdException`."""

    code = "InvalidGrantIdException"


class KmsInvalidSignature(KmsError):
    """AWS `KMSInvalidSignatureException`: Verify found the signature not valid."""

    code = "KMSInvalidSignatureException"
    wire_message = False


class KmsInvalidMac(KmsError):
    """AWS `KMSInvalidMacException`: VerifyMac found the MAC not valid."""

    code = "KMSInvalidMacException"
    wire_message = False


class ExpiredImportToken(KmsError):
    """AWS `ExpiredImportTokenException`."""

    code = "ExpiredImportTokenException"


class InvalidImportToken(KmsError):
    """AWS `InvalidImportTokenException`."""

    code = "InvalidImportTokenException"


class IncorrectKeyMaterial(KmsError):
    """AWS `IncorrectKeyMaterialException`."""

    code = "IncorrectKeyMaterialException"


class DependencyTimeout(KmsError):
    """AWS `DependencyTimeoutException`: a key store did not answer in time."""

    code = "DependencyTimeoutException"


class CustomKeyStoreNotFound(KmsError):
    """AWS `CustomKeyStoreNotFoundException`."""

    code = "CustomKeyStoreNotFoundException"


class CustomKeyStoreInvalidState(KmsError):
    """AWS `CustomKeyStoreInvalidStateException`: the store's connection state forbids the call."""

    code = "CustomKeyStoreInvalidStateException"


class CustomKeyStoreNameInUse(KmsError):
    """AWS `CustomKeyStoreNameInUseException`."""

    code = "CustomKeyStoreNameInUseException"


class CustomKeyStoreHasCMKs(KmsError):
    """AWS `CustomKeyStoreHasCMKsException`: the store still has keys."""

    code = "CustomKeyStoreHasCMKsException"


class CloudHsmClusterNotFound(KmsError):
    """AWS `CloudHsmClusterNotFoundException` (kmsweb: no PKCS#11 token with that label)."""

    code = "CloudHsmClusterNotFoundException"


class CloudHsmClusterInUse(KmsError):
    """AWS `CloudHsmClusterInUseException` (kmsweb: the token backs another store)."""

    code = "CloudHsmClusterInUseException"


class CloudHsmClusterNotActive(KmsError):
    """AWS `CloudHsmClusterNotActiveException` (kmsweb: the token has no user PIN yet)."""

    code = "CloudHsmClusterNotActiveException"


class CloudHsmClusterInvalidConfiguration(KmsError):
    """AWS `CloudHsmClusterInvalidConfigurationException`."""

    code = "CloudHsmClusterInvalidConfigurationException"


class CloudHsmClusterNotRelated(KmsError):
    """AWS `CloudHsmClusterNotRelatedException`: another token than the store's."""

    code = "CloudHsmClusterNotRelatedException"


class XksProxyUriInUse(KmsError):
    """AWS `XksProxyUriInUseException`."""

    code = "XksProxyUriInUseException"


class XksProxyUriUnreachable(KmsError):
    """AWS `XksProxyUriUnreachableException`."""

    code = "XksProxyUriUnreachableException"


class XksProxyIncorrectAuthenticationCredential(KmsError):
    """AWS `XksProxyIncorrectAuthenticationCredentialException`."""

    code = "XksProxyIncorrectAuthenticationCredentialException"


class XksProxyInvalidResponse(KmsError):
    """AWS `XksProxyInvalidResponseException`."""

    code = "XksProxyInvalidResponseException"


class XksProxyInvalidConfiguration(KmsError):
    """AWS `XksProxyInvalidConfigurationException`."""

    code = "XksProxyInvalidConfigurationException"


class XksKeyNotFound(KmsError):
    """AWS `XksKeyNotFoundException`."""

    code = "XksKeyNotFoundException"


class XksKeyInvalidConfiguration(KmsError):
    """AWS `XksKeyInvalidConfigurationException`."""

    code = "XksKeyInvalidConfigurationException"


class XksKeyAlreadyInUse(KmsError):
    """AWS `XksKeyAlreadyInUseException`."""

    code = "XksKeyAlreadyInUseException"


class IncorrectTrustAnchor(KmsError):
    """AWS `IncorrectTrustAnchorException`."""

    code = "IncorrectTrustAnchorException"
