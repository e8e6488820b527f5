"""SMS through AWS SNS `Publish` to a phone number with boto3, run in a bounded thread pool."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from adapters.executor import SdkThreads
from kernel.errors import PermanentDeliveryError, RetriableDeliveryError
from kernel.privacy import scrub
from kernel.settings import Settings
from schemas.notifications import SmsNotification
from schemas.reasons import DeliveryReason

# SNS error codes worth retrying: throttling and the service's own failures.
RETRIABLE_CODES = {
    "Throttling",
    "ThrottlingException",
    "Throttled",
    "KMSThrottling",
    "RequestLimitExceeded",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
}
PERMANENT_CODES: dict[str, DeliveryReason] = {
    "InvalidParameter": DeliveryReason.INVALID_REQUEST,
    "InvalidParameterValue": DeliveryReason.INVALID_REQUEST,
    "AuthorizationError": DeliveryReason.PROVIDER_AUTH,
    "OptedOut": DeliveryReason.UNSUBSCRIBED,
}


class SnsSmsSender:
    name = "sns"

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        sender_id: str | None = None,
        sms_type: str = "Transactional",
        timeout: float = 10.0,
        executor: ThreadPoolExecutor | None = None,
        max_workers: int = 8,
    ) -> None:
        # total_max_attempts=1: botocore's own retries are off, one send is one Publish (Herald retries).
        config = Config(
            region_name=region,
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        # A private session: boto3's default session is shared module state and not thread-safe to create.
        # Without explicit keys, the session finds credentials the usual AWS way (role, profile, env).
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
        self._client: Any = session.client("sns", endpoint_url=endpoint_url, config=config)
        self._attributes: dict[str, dict[str, str]] = {
            "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": sms_type},
        }
        if sender_id is not None:
            self._attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": sender_id}
        self._threads = SdkThreads(executor, max_workers=max_workers, name="herald-sns")

    @classmethod
    def from_settings(cls, settings: Settings, executor: ThreadPoolExecutor) -> Self | None:
        """The sender the settings describe, or None without `HERALD_SNS_REGION`."""
        if settings.sns_region is None:
            return None
        secret = settings.sns_secret_access_key
        return cls(
            region=settings.sns_region,
            endpoint_url=settings.sns_endpoint_url,
            access_key_id=settings.sns_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            sender_id=settings.sns_sender_id,
            sms_type=settings.sns_sms_type,
            timeout=settings.sns_timeout_seconds,
            executor=executor,
        )

    def _publish(self, message: SmsNotification) -> str | None:
        response = self._client.publish(
            PhoneNumber=message.to, Message=message.text, MessageAttributes=self._attributes
        )
        message_id = response.get("MessageId")
        return str(message_id) if message_id else None

    async def send(self, message: SmsNotification) -> str | None:
        try:
            return await self._threads.run(lambda: self._publish(message))
        except ClientError as exc:
            raise _translate(exc, message.to) from exc
        except BotoCoreError as exc:
            # Connection failures and connect/read timeouts.
            raise RetriableDeliveryError(
                f"SNS unreachable: {type(exc).__name__}: {scrub(str(exc), message.to)}",
                reason=DeliveryReason.PROVIDER_UNAVAILABLE,
            ) from exc

    async def aclose(self) -> None:
        self._client.close()  # botocore's connection pool
        self._threads.shutdown()


def _translate(exc: ClientError, to: str) -> PermanentDeliveryError | RetriableDeliveryError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    # SNS's message may name the number ("PhoneNumber Reason: +33… is not valid"): pseudonymized.
    detail = f"SNS {status} {code}: {scrub(str(error.get('Message', '')), to)}"
    if code in PERMANENT_CODES:
        return PermanentDeliveryError(detail, reason=PERMANENT_CODES[code], provider_code=code)
    if status == 429 or "Throttl" in code or code in RETRIABLE_CODES:
        rate_limited = status == 429 or "Throttl" in code or code == "RequestLimitExceeded"
        return RetriableDeliveryError(
            detail,
            reason=DeliveryReason.RATE_LIMITED if rate_limited else DeliveryReason.PROVIDER_UNAVAILABLE,
            provider_code=code,
        )
    if status >= 500:
        return RetriableDeliveryError(detail, reason=DeliveryReason.PROVIDER_UNAVAILABLE, provider_code=code)
    return PermanentDeliveryError(detail, reason=DeliveryReason.PROVIDER_REFUSED, provider_code=code)
