"""Money: integer amounts in a currency's minor unit, with ISO 4217 currency codes.

Amounts are never floats. ``Money(1050, "EUR")`` is 10.50 EUR; ``Money(500, "JPY")`` is 500 yen
(a currency without a minor unit counts whole units). Codes are upper-case on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudphone.domain import InvalidInputError

_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN
    BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP
    ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK
    JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK
    MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN
    PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB
    TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XCD
    XCG XOF XPF YER ZAR ZMW ZWG ZWL
"""

ISO_4217 = frozenset(_CODES.split())
"""Active ISO 4217 codes of currencies (funds codes included; precious metals, testing and
"no currency" codes such as XAU, XTS and XXX are not money a customer pays with)."""

MAX_AMOUNT = 10**12
"""Largest amount accepted in one order (minor units); far above any real card payment."""


def normalize_currency(code: str) -> str:
    """Return the upper-case ISO 4217 code; raise InvalidInputError for anything else."""
    upper = code.strip().upper()
    if upper not in ISO_4217:
        raise InvalidInputError(
            f"currency {code!r} is not an ISO 4217 currency code (e.g. EUR, USD)",
            code="invalid_currency",
        )
    return upper


def check_amount(amount: int, *, what: str = "amount") -> int:
    """Return ``amount`` if it is a positive whole number of minor units within bounds."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidInputError(f"{what} must be an integer number of minor units")
    if amount <= 0:
        raise InvalidInputError(
            f"{what} must be greater than zero, got {amount}", code="invalid_amount"
        )
    if amount > MAX_AMOUNT:
        raise InvalidInputError(f"{what} must be at most {MAX_AMOUNT}", code="invalid_amount")
    return amount


@dataclass(frozen=True)
class Money:
    """An amount in minor units of a currency; validated on creation."""

    amount: int
    """Whole minor units (cents for EUR); always positive."""

    currency: str
    """Upper-case ISO 4217 code."""

    def __post_init__(self) -> None:
        check_amount(self.amount)
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} (minor units)"
