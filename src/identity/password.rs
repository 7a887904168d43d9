//! Passwords: what a password is (NFKC-normalised, 12 to 128 characters, never truncated), the policy
//! that refuses weak ones at sign-up, change and reset (a blocklist of common and breached passwords,
//! the user's own phone and e-mail, zxcvbn guessability), and Argon2id hashing and verification, run
//! off the async runtime in a bounded pool so that a login flood cannot starve the request workers.
//!
//! The blocklist is `data/common-passwords.txt` (see `data/common-passwords.LICENSE` for its source),
//! compiled into the binary.

use std::fmt;
use std::sync::LazyLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{Error as HashError, PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use unicode_normalization::UnicodeNormalization as _;
use zxcvbn::Score;

use crate::secret::{HashPool, Secret};

/// Length limits, in characters after NFKC (section 7 of ARCHITECTURE.md).
const MIN_CHARS: usize = 12;
const MAX_CHARS: usize = 128;

/// Raw inputs over this many bytes are never normalised or hashed as they are. 128 characters take at
/// most 512 bytes, so this leaves room for input that shrinks under NFKC (decomposed Hangul, combining
/// marks) while bounding the work an oversized request body can cause.
const MAX_RAW_BYTES: usize = 1024;

/// How many digits at the end of the phone number a password must not contain.
const PHONE_TAIL_DIGITS: usize = 8;

/// E-mail local parts shorter than this are too common as substrings to refuse ("abc", "jo").
const MIN_LOCAL_PART_CHARS: usize = 4;

/// Argon2id cost: OWASP's minimum for Argon2id, and what section 7 asks for.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Verified against when there is no account (or its stored hash is unusable), so that the answer
/// takes as long as a real verification. Its parameters must stay equal to the ones above (a test
/// checks); the password behind it is random and was thrown away.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$/hLJFgCvjYb5FnNs6/Cpwg$oQ9/3gB13pDsQTnsvwNo6DcSVSkKVwyVQdq9v/jwCTE";

static BLOCKLIST_TEXT: &str = include_str!("../../data/common-passwords.txt");

/// The blocklist as sorted slices of the embedded text. The file is already sorted and lowercase
/// (a test checks); sorting again here costs one linear pass and keeps lookups correct even if a
/// hand edit breaks the order.
static BLOCKLIST: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut entries: Vec<&'static str> = BLOCKLIST_TEXT.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    entries.sort_unstable();
    entries.dedup();
    entries
});

/// Why a password is refused; `as_str()` gives the API reason: "too_short", "too_long", "common",
/// "guessable", "personal".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeakReason {
    TooShort,
    TooLong,
    Common,
    Guessable,
    Personal,
}

impl WeakReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WeakReason::TooShort => "too_short",
            WeakReason::TooLong => "too_long",
            WeakReason::Common => "common",
            WeakReason::Guessable => "guessable",
            WeakReason::Personal => "personal",
        }
    }
}

/// A password as submitted, NFKC-normalised, never truncated; Debug prints ***.
pub struct Password(Secret<String>);

impl Password {
    /// NFKC-normalises, then checks length in characters (chars after NFKC): fewer than 12 → TooShort,
    /// more than 128 → TooLong.
    ///
    /// Raw input over 1024 bytes is TooLong without being normalised. Nearly always it would be anyway;
    /// the exception (over 1024 bytes of decomposed text that composes to 128 characters or fewer)
    /// would otherwise be a password `for_login` can never match.
    pub fn parse(raw: &str) -> Result<Password, WeakReason> {
        if raw.len() > MAX_RAW_BYTES {
            return Err(WeakReason::TooLong);
        }
        let normalised: String = raw.nfkc().collect();
        match normalised.chars().count() {
            n if n < MIN_CHARS => Err(WeakReason::TooShort),
            n if n > MAX_CHARS => Err(WeakReason::TooLong),
            _ => Ok(Password(Secret::new(normalised))),
        }
    }

    /// Use only where a password must not be refused for its shape (login): normalises, no length check,
    /// but inputs over 1024 bytes are cut to a value that can never match (so a huge body cannot cost a
    /// huge hash).
    ///
    /// That value is 129 NUL characters: longer than `parse` accepts, so no stored hash can be of it,
    /// and the same for every oversized input, so the hash that still runs costs what any other does
    /// (the caller's timing stays the same whether or not the input was oversized).
    pub fn for_login(raw: &str) -> Password {
        if raw.len() > MAX_RAW_BYTES {
            return Password(Secret::new("\0".repeat(MAX_CHARS + 1)));
        }
        Password(Secret::new(raw.nfkc().collect()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The sign-up / change / reset policy, after `parse`: Common if the lowercased password is on the
/// blocklist; Personal if it contains (case-insensitively) the last 8 digits of `phone` (E.164, e.g.
/// "+819012345678") or the local part of `email` when that local part has 4 or more characters;
/// Guessable if zxcvbn scores it below 3 (zxcvbn gets the phone digits and e-mail parts as user
/// inputs). Checked in the order Common, Personal, Guessable.
///
/// A phone with fewer than 8 digits adds no Personal check (it is not E.164; the caller refuses it).
/// The e-mail local part is what precedes the last '@' (the whole string if there is none).
pub fn check_policy(password: &Password, phone: &str, email: &str) -> Result<(), WeakReason> {
    let lowered = password.expose().to_lowercase();
    if is_common(&lowered) {
        return Err(WeakReason::Common);
    }

    let personal = Personal::new(phone, email);
    if personal.forbidden().any(|fragment| lowered.contains(fragment)) {
        return Err(WeakReason::Personal);
    }

    // zxcvbn 3 returns score 0 for an empty password rather than failing, and looks at the first 100
    // characters only, which bounds its cost.
    let inputs = personal.zxcvbn_inputs();
    if zxcvbn::zxcvbn(password.expose(), &inputs).score() < Score::Three {
        return Err(WeakReason::Guessable);
    }
    Ok(())
}

/// How many entries the blocklist holds.
pub fn blocklist_len() -> usize {
    BLOCKLIST.len()
}

fn is_common(lowered: &str) -> bool {
    BLOCKLIST.binary_search(&lowered).is_ok()
}

/// The user's own data, normalised the way passwords are and lowercased.
struct Personal {
    /// Every ASCII digit of the phone number, in order.
    phone_digits: String,
    email: String,
}

impl Personal {
    fn new(phone: &str, email: &str) -> Personal {
        Personal {
            phone_digits: phone.nfkc().filter(char::is_ascii_digit).collect(),
            email: email.nfkc().collect::<String>().to_lowercase(),
        }
    }

    /// The last `n` phone digits, if there are that many. The digits are ASCII, so the byte slice is
    /// on a character boundary.
    fn phone_tail(&self, n: usize) -> Option<&str> {
        let len = self.phone_digits.len();
        if len >= n { self.phone_digits.get(len - n..) } else { None }
    }

    fn local_part(&self) -> &str {
        self.email.rsplit_once('@').map_or(self.email.as_str(), |(local, _)| local)
    }

    fn domain(&self) -> Option<&str> {
        self.email.rsplit_once('@').map(|(_, domain)| domain)
    }

    /// Substrings a password must not contain.
    fn forbidden(&self) -> impl Iterator<Item = &str> {
        let local = self.local_part();
        let local = (local.chars().count() >= MIN_LOCAL_PART_CHARS).then_some(local);
        self.phone_tail(PHONE_TAIL_DIGITS).into_iter().chain(local)
    }

    /// Hints for zxcvbn, which then counts a password built from them as easy to guess. Empty strings
    /// are left out.
    fn zxcvbn_inputs(&self) -> Vec<&str> {
        let local = self.local_part();
        let domain = self.domain();
        let mut inputs: Vec<&str> = vec![self.phone_digits.as_str(), local];
        // The national number without the country code, as people type their own (9012345678).
        inputs.extend(self.phone_tail(10));
        inputs.extend(self.phone_tail(PHONE_TAIL_DIGITS));
        // "taro.yamada" also as "taro" and "yamada".
        inputs.extend(local.split(|c: char| !c.is_alphanumeric()));
        inputs.extend(domain);
        inputs.extend(domain.and_then(|d| d.split('.').next()));
        inputs.retain(|s| !s.is_empty());
        inputs.sort_unstable();
        inputs.dedup();
        inputs
    }
}

/// Argon2id hashing (m = 19456 KiB, t = 2, p = 1, PHC string output) off the async runtime, on the
/// bounded [`HashPool`] (a login flood cannot starve the async workers, nor exhaust memory: each run
/// holds 19 MiB).
pub async fn hash(pool: &HashPool, password: &Password) -> anyhow::Result<String> {
    let password = password.0.clone();
    pool.run(move || {
        let phc = argon2()?
            .hash_password(password.expose().as_bytes())
            .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
        Ok(phc.to_string())
    })
    .await?
}

/// Verifies against the stored PHC string. With `None` (an unknown account) it verifies against a
/// fixed dummy hash of the same cost and returns false, so that timing does not reveal whether an
/// account exists. A malformed stored hash returns false (with a warning that leaves the hash out).
///
/// The stored string's own parameters are used, so hashes made with older costs still verify.
pub async fn verify(pool: &HashPool, password: &Password, stored: Option<&str>) -> bool {
    let password = password.0.clone();
    let stored = stored.map(str::to_owned);
    match pool.run(move || verify_blocking(password.expose(), stored.as_deref())).await {
        Ok(matches) => matches,
        Err(e) => {
            tracing::warn!(error = %e, "password verification did not run");
            false
        }
    }
}

fn argon2() -> anyhow::Result<Argon2<'static>> {
    let params =
        Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn verify_blocking(password: &str, stored: Option<&str>) -> bool {
    // Verification takes algorithm, version and costs from the PHC string, not from this instance.
    let argon2 = Argon2::default();
    let Some(stored) = stored else {
        burn_dummy(&argon2, password);
        return false;
    };
    let hash = match PasswordHash::new(stored) {
        // Without salt or output there is nothing to compute, so the answer would come early.
        Ok(hash) if hash.salt.is_none() || hash.hash.is_none() => {
            tracing::warn!("stored password hash has no salt or output");
            burn_dummy(&argon2, password);
            return false;
        }
        Ok(hash) => hash,
        Err(e) => {
            tracing::warn!(error = %e, "stored password hash is malformed");
            burn_dummy(&argon2, password);
            return false;
        }
    };
    match argon2.verify_password(password.as_bytes(), &hash) {
        Ok(()) => true,
        Err(HashError::PasswordInvalid) => false,
        Err(e) => {
            // Other errors (an unknown algorithm, bad parameters) come before any hashing.
            tracing::warn!(error = %e, "stored password hash cannot be verified");
            burn_dummy(&argon2, password);
            false
        }
    }
}

/// Spends the time of one real verification.
fn burn_dummy(argon2: &Argon2<'_>, password: &str) {
    let outcome = argon2.verify_password(password.as_bytes(), DUMMY_HASH);
    std::hint::black_box(outcome).ok();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const PHONE: &str = "+819012345678";
    const EMAIL: &str = "taro.yamada@example.com";

    /// A random 20-character password (from a password generator; used nowhere).
    const STRONG: &str = "q7#Vm2!xLp9$Rt4&Wz8k";

    fn policy(raw: &str) -> Result<(), WeakReason> {
        check_policy(&Password::parse(raw)?, PHONE, EMAIL)
    }

    #[test]
    fn reasons_have_api_names() {
        let all = [
            (WeakReason::TooShort, "too_short"),
            (WeakReason::TooLong, "too_long"),
            (WeakReason::Common, "common"),
            (WeakReason::Guessable, "guessable"),
            (WeakReason::Personal, "personal"),
        ];
        for (reason, name) in all {
            assert_eq!(reason.as_str(), name);
        }
    }

    #[test]
    fn length_is_counted_in_characters_after_nfkc() {
        assert_eq!(Password::parse("abcdefghijk").unwrap_err(), WeakReason::TooShort);
        assert_eq!(Password::parse("abcdefghijkl").unwrap().expose(), "abcdefghijkl");
        // Full-width letters are normalised to ASCII.
        let full_width = "ｑ７Ｖｍ２ｘＬｐ９Ｒｔ４";
        assert_eq!(Password::parse(full_width).unwrap().expose(), "q7Vm2xLp9Rt4");
        // 6 characters that NFKC expands to 12 ("㎏" is "kg").
        assert_eq!(Password::parse("㎏㎏㎏㎏㎏㎏").unwrap().expose(), "kgkgkgkgkgkg");
        // 24 characters (e + combining acute) that NFKC composes to 12: too short.
        assert_eq!(Password::parse(&"e\u{301}".repeat(12)).unwrap().expose(), "é".repeat(12));
        assert_eq!(Password::parse(&"e\u{301}".repeat(11)).unwrap_err(), WeakReason::TooShort);
        // Multi-byte characters count once.
        assert!(Password::parse(&"猫".repeat(128)).is_ok());
        assert_eq!(Password::parse(&"猫".repeat(129)).unwrap_err(), WeakReason::TooLong);
        assert_eq!(Password::parse("").unwrap_err(), WeakReason::TooShort);
    }

    #[test]
    fn long_passwords_are_refused_not_truncated() {
        let long = "x".repeat(200);
        assert_eq!(Password::parse(&long).unwrap_err(), WeakReason::TooLong);
        assert_eq!(Password::parse(&"x".repeat(128)).unwrap().expose().len(), 128);
        assert_eq!(Password::for_login(&long).expose(), long);
        // Over 1024 bytes: refused before normalising, even if it would compose to few characters.
        assert_eq!(Password::parse(&"a".repeat(2000)).unwrap_err(), WeakReason::TooLong);
    }

    #[test]
    fn login_passwords_are_normalised_and_bounded() {
        assert_eq!(Password::for_login("ｐａｓｓ").expose(), "pass");
        assert_eq!(Password::for_login("").expose(), "");
        let at_limit = "a".repeat(MAX_RAW_BYTES);
        assert_eq!(Password::for_login(&at_limit).expose(), at_limit);
        let huge = Password::for_login(&"a".repeat(1_000_000));
        let other_huge = Password::for_login(&"b".repeat(MAX_RAW_BYTES + 1));
        assert_eq!(huge.expose(), other_huge.expose());
        assert!(huge.expose().len() <= MAX_RAW_BYTES);
        // No password that sign-up accepts can equal it.
        assert_eq!(Password::parse(huge.expose()).unwrap_err(), WeakReason::TooLong);
    }

    #[test]
    fn blocklisted_passwords_are_common_in_any_case() {
        assert!(blocklist_len() >= 100_000, "blocklist has {} entries", blocklist_len());
        assert_eq!(policy("passwordpassword"), Err(WeakReason::Common));
        assert_eq!(policy("PassWordPassWord"), Err(WeakReason::Common));
        assert_eq!(policy("ILoveYouForever"), Err(WeakReason::Common));
        // Full-width input is normalised before the lookup.
        assert_eq!(policy("ｐａｓｓｗｏｒｄｐａｓｓｗｏｒｄ"), Err(WeakReason::Common));
        // Common wins over Personal and Guessable.
        let on_list_and_personal = check_policy(&Password::parse("passwordpassword").unwrap(), PHONE, "password@x.jp");
        assert_eq!(on_list_and_personal, Err(WeakReason::Common));
    }

    #[test]
    fn blocklist_file_is_canonical() {
        let lines: Vec<&str> = BLOCKLIST_TEXT.lines().collect();
        assert_eq!(lines.len(), blocklist_len());
        for pair in lines.windows(2) {
            assert!(pair[0] < pair[1], "not sorted or duplicated: {:?} {:?}", pair[0], pair[1]);
        }
        for line in lines {
            assert!(!line.is_empty() && line.trim() == line, "untrimmed line {line:?}");
            assert_eq!(line.to_lowercase(), line, "not lowercase");
            assert!(line.nfkc().eq(line.chars()), "not NFKC: {line:?}");
        }
    }

    #[test]
    fn phone_and_email_make_passwords_personal() {
        assert_eq!(policy("zebra-12345678-canoe!"), Err(WeakReason::Personal));
        assert_eq!(policy("Taro.Yamada-likes-kayaks"), Err(WeakReason::Personal));
        assert_eq!(policy("TARO.YAMADA#Wq9zLk2v"), Err(WeakReason::Personal));
        // Full-width digits normalise to the phone's digits.
        assert_eq!(policy("zebra-１２３４５６７８-canoe!"), Err(WeakReason::Personal));
        // Seven of the last eight digits is not the rule (zxcvbn may still weigh it).
        let seven = check_policy(&Password::parse("q7#Vm2!x2345678&Wz8k").unwrap(), PHONE, EMAIL);
        assert_ne!(seven, Err(WeakReason::Personal));
        // Personal is checked before Guessable.
        assert_eq!(policy("aaaaaaaa12345678"), Err(WeakReason::Personal));
    }

    #[test]
    fn short_local_parts_are_not_personal() {
        let password = Password::parse("abcQ7#vLm9!pR2wX").unwrap();
        assert_eq!(check_policy(&password, PHONE, "abc@example.jp"), Ok(()));
        assert_eq!(check_policy(&password, PHONE, "abcq@example.jp"), Err(WeakReason::Personal));
    }

    #[test]
    fn guessable_passwords_are_refused() {
        // Long but built from words, repeats and keyboard walks; none is on the blocklist.
        for weak in ["starwarsstarwars", "monkeymonkey12", "dragonfootball", "iloveyoubaby123", "aaaaaaaaaaaaaaab"] {
            assert_eq!(policy(weak), Err(WeakReason::Guessable), "{weak}");
        }
        assert_eq!(policy(STRONG), Ok(()));
    }

    #[test]
    fn contacts_are_hints_for_zxcvbn() {
        // Neither contains the local part nor the phone digits, but zxcvbn is told about the pieces.
        for built_from_contacts in ["example.comtaro1", "yamadatarotaro"] {
            assert_eq!(policy(built_from_contacts), Err(WeakReason::Guessable), "{built_from_contacts}");
            let password = Password::parse(built_from_contacts).unwrap();
            assert_eq!(check_policy(&password, "+15551230000", "someone@else.org"), Ok(()), "{built_from_contacts}");
        }
    }

    #[test]
    fn policy_never_panics_on_odd_contacts() {
        let password = Password::for_login("");
        assert_eq!(check_policy(&password, "", ""), Err(WeakReason::Guessable));
        let password = Password::parse(STRONG).unwrap();
        let contacts = [("", ""), ("+", "@"), ("١٢٣٤٥٦٧٨٩", "@@@"), ("+8190１２３", "é@"), ("x", "a@b@c")];
        for (phone, email) in contacts {
            assert_eq!(check_policy(&password, phone, email), Ok(()), "{phone:?} {email:?}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn policy_never_panics(raw in "\\PC{0,140}", phone in "\\PC{0,20}", email in "\\PC{0,40}") {
                if let Ok(password) = Password::parse(&raw) {
                    let _ = check_policy(&password, &phone, &email);
                }
                let _ = check_policy(&Password::for_login(&raw), &phone, &email);
            }
        }
    }

    #[test]
    fn debug_does_not_print_the_password() {
        let password = Password::parse(STRONG).unwrap();
        assert_eq!(format!("{password:?}"), "***");
        assert_eq!(format!("{:?}", Some(&password)), "Some(***)");
    }

    #[test]
    fn dummy_hash_has_the_real_cost() {
        let hash = PasswordHash::new(DUMMY_HASH).unwrap();
        let expected = argon2().unwrap();
        assert_eq!(hash.algorithm.as_str(), "argon2id");
        let (stored, expected) = (Params::try_from(&hash).unwrap(), expected.params().clone());
        assert_eq!((stored.m_cost(), stored.t_cost(), stored.p_cost()), (M_COST_KIB, T_COST, P_COST));
        assert_eq!((expected.m_cost(), expected.t_cost(), expected.p_cost()), (19456, 2, 1));
        assert!(hash.salt.is_some() && hash.hash.is_some());
    }

    #[tokio::test]
    async fn hash_and_verify_round_trip() {
        let hasher = HashPool::new(2);
        let password = Password::parse(STRONG).unwrap();
        let stored = hash(&hasher, &password).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(verify(&hasher, &password, Some(&stored)).await);
        let wrong = Password::parse("q7#Vm2!xLp9$Rt4&Wz8K").unwrap();
        assert!(!verify(&hasher, &wrong, Some(&stored)).await);
        // The same password read at login (full-width) normalises to the same value.
        let full_width: String = STRONG.chars().map(full_width).collect();
        assert!(verify(&hasher, &Password::for_login(&full_width), Some(&stored)).await);
    }

    fn full_width(c: char) -> char {
        match c {
            '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap(),
            _ => c,
        }
    }

    #[tokio::test]
    async fn malformed_stored_hashes_do_not_verify() {
        let hasher = HashPool::new(1);
        let password = Password::parse(STRONG).unwrap();
        for stored in ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA", "$bcrypt$xyz$abc"] {
            assert!(!verify(&hasher, &password, Some(stored)).await, "{stored}");
        }
    }

    #[tokio::test]
    async fn unknown_accounts_take_as_long_as_real_ones() {
        let hasher = HashPool::new(1);
        let password = Password::parse(STRONG).unwrap();
        let stored = hash(&hasher, &password).await.unwrap();
        let wrong = Password::parse("another-Password-42!").unwrap();

        // Minimum of a few runs each, so that other tests on the same cores do not decide the outcome.
        let (mut real, mut unknown) = (Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            let started = Instant::now();
            assert!(!verify(&hasher, &wrong, Some(&stored)).await);
            real = real.min(started.elapsed());
            let started = Instant::now();
            assert!(!verify(&hasher, &password, None).await);
            unknown = unknown.min(started.elapsed());
        }
        assert!(unknown * 3 > real && real * 3 > unknown, "real {real:?}, unknown account {unknown:?}");
    }

    #[test]
    fn zero_permits_means_one() {
        assert_eq!(HashPool::new(0).threads(), 1);
        assert_eq!(HashPool::new(4).threads(), 4);
        // A full queue refuses at once: 8 places per thread.
        let pool = HashPool::new(1);
        let places: Vec<_> = (0..crate::secret::QUEUE_PER_PERMIT).map(|_| pool.admit().unwrap()).collect();
        assert!(pool.admit().is_none());
        drop(places);
        assert!(pool.admit().is_some());
    }
}
