"""Building each channel's providers from the settings, in the configured failover order. Only providers
with settings take part; incomplete settings were already refused by `Settings`."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from adapters.email.sendgrid import SendGridEmailSender
from adapters.email.smtp import SmtpEmailSender
from adapters.push import PushSender
from adapters.push.apns import ApnsPushSender
from adapters.push.fcm import FcmPushSender
from adapters.sms.sns import SnsSmsSender
from adapters.sms.twilio import TwilioSmsSender
from kernel.errors import ConfigurationError
from kernel.settings import Settings
from schemas.notifications import EmailNotification, SmsNotification
from streams.delivery.failover import Provider


@dataclass
class Providers:
    email: list[Provider[EmailNotification]] = field(default_factory=list)
    sms: list[Provider[SmsNotification]] = field(default_factory=list)
    push: list[PushSender] = field(default_factory=list)


def _secret(value: Any) -> str:
    return str(value.get_secret_value())


def build_providers(settings: Settings) -> Providers:
    # One pool for every synchronous SDK: its size bounds the provider calls in flight at once.
    threads = ThreadPoolExecutor(max_workers=settings.provider_threads, thread_name_prefix="herald-provider")
    providers = Providers()
    for name in settings.provider_order("email"):
        if name == "smtp" and settings.smtp_host is not None:
            providers.email.append(SmtpEmailSender.from_settings(settings))
        elif name == "sendgrid" and settings.sendgrid_api_key is not None:
            providers.email.append(
                SendGridEmailSender(
                    _secret(settings.sendgrid_api_key),
                    sender=settings.email_from,
                    base_url=settings.sendgrid_base_url,
                    timeout=settings.sendgrid_timeout_seconds,
                    executor=threads,
                )
            )
    for name in settings.provider_order("sms"):
        if name == "twilio" and settings.twilio_account_sid is not None:
            assert settings.twilio_auth_token is not None and settings.twilio_from is not None
            providers.sms.append(
                TwilioSmsSender(
                    settings.twilio_account_sid,
                    _secret(settings.twilio_auth_token),
                    sender=settings.twilio_from,
                    base_url=settings.twilio_base_url,
                    timeout=settings.twilio_timeout_seconds,
                    executor=threads,
                    max_workers=settings.provider_threads,
                )
            )
        elif name == "sns" and settings.sns_region is not None:
            providers.sms.append(
                SnsSmsSender(
                    region=settings.sns_region,
                    endpoint_url=settings.sns_endpoint_url,
                    access_key_id=settings.sns_access_key_id,
                    secret_access_key=_secret(settings.sns_secret_access_key)
                    if settings.sns_secret_access_key
                    else None,
                    sender_id=settings.sns_sender_id,
                    sms_type=settings.sns_sms_type,
                    timeout=settings.sns_timeout_seconds,
                    executor=threads,
                )
            )
    for name in settings.provider_order("push"):
        if name == "fcm" and settings.fcm_service_account_file is not None:
            try:
                account = json.loads(settings.fcm_service_account_file.read_text(encoding="utf-8"))
                providers.push.append(
                    FcmPushSender(
                        account,
                        base_url=settings.fcm_base_url,
                        project_id=settings.fcm_project_id,
                        timeout=settings.fcm_timeout_seconds,
                        executor=threads,
                        max_tokens_per_call=settings.fcm_max_tokens_per_call,
                    )
                )
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigurationError(
                    f"HERALD_FCM_SERVICE_ACCOUNT_FILE: not a usable service-account key: {type(exc).__name__}"
                ) from None
        elif name == "apns" and settings.apns_key_file is not None:
            assert settings.apns_key_id and settings.apns_team_id and settings.apns_topic
            try:
                providers.push.append(
                    ApnsPushSender(
                        settings.apns_key_file.read_bytes(),
                        key_id=settings.apns_key_id,
                        team_id=settings.apns_team_id,
                        topic=settings.apns_topic,
                        base_url=settings.apns_base_url,
                        timeout=settings.apns_timeout_seconds,
                        max_concurrency=settings.apns_max_concurrency,
                        time_to_live=settings.apns_time_to_live_seconds,
                        token_renew_after=settings.apns_token_renew_seconds,
                        ca_file=settings.apns_ca_file,
                    )
                )
            except (OSError, ValueError) as exc:
                raise ConfigurationError(
                    f"HERALD_APNS_KEY_FILE / HERALD_APNS_CA_FILE: not usable: {type(exc).__name__}"
                ) from None
    return providers
