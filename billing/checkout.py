"""Buying: a Stripe customer per account, Checkout for credit packs and pay-as-you-go."""

from __future__ import annotations

from .accounts import AccountService
from .errors import PaymentsNotConfigured, UnknownPlan, echo
from .payments import CheckoutRequest, CheckoutSession, PaymentGateway


class CheckoutService:
    def __init__(self, gateway: PaymentGateway, accounts: AccountService, *, payg_price: str | None = None) -> None:
        self._gateway = gateway
        self._accounts = accounts
        self.payg_price = payg_price  # the metered Stripe Price of the pay-as-you-go plan

    async def customer_of(self, account_id: str) -> str:
        """The account's Stripe customer, created on first need.

        The idempotency key makes concurrent or retried creations one customer, and
        the database keeps the first one linked if two replicas race.
        """
        account = await self._accounts.get(account_id)
        if account.stripe_customer_id:
            return account.stripe_customer_id
        customer = await self._gateway.create_customer(
            account_id=account.id, name=account.name, idempotency_key=f"arclip-customer-{account.id}"
        )
        return await self._accounts.set_customer(account.id, customer)

    async def buy_pack(self, account_id: str, pack: str, *, success_url: str, cancel_url: str) -> CheckoutSession:
        chosen = self._accounts.catalogue.pack(pack)
        customer = await self.customer_of(account_id)
        return await self._gateway.create_checkout(
            CheckoutRequest(account_id=account_id, customer_id=customer, success_url=success_url,
                            cancel_url=cancel_url, pack=chosen)
        )

    async def subscribe(self, account_id: str, plan: str, *, success_url: str, cancel_url: str) -> CheckoutSession:
        if not self._accounts.catalogue.plan(plan).metered:
            raise UnknownPlan(f"Plan {echo(plan)!r} is not sold by subscription; buy a credit pack instead.")
        if not self.payg_price:
            raise PaymentsNotConfigured("Pay-as-you-go is not configured (ARCLIP_STRIPE_PAYG_PRICE).")
        customer = await self.customer_of(account_id)
        return await self._gateway.create_checkout(
            CheckoutRequest(account_id=account_id, customer_id=customer, success_url=success_url,
                            cancel_url=cancel_url, subscription_price=self.payg_price, plan=plan)
        )
