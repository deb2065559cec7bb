//! The provider registry: every [`BindProvider`] linked into the program,
//! collected through `inventory` and sorted once.
//!
//! Registration runs no code: a provider crate submits a const
//! [`ProviderDescriptor`] with [`register_provider!`](crate::register_provider).
//! `inventory::iter` order is unspecified, so the registry sorts by priority then
//! name, and refuses two providers with the same name, naming both crates.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::provider::{BindProvider, ProviderInfo};

/// What a provider crate registers: constant facts and a plain constructor.
#[derive(Debug)]
pub struct ProviderDescriptor {
    /// The provider's constant facts (the same value its `info()` returns).
    pub info: ProviderInfo,
    /// The crate that registered it (filled in by the macro).
    pub crate_name: &'static str,
    /// Builds the provider.
    pub build: fn() -> Box<dyn BindProvider>,
}

inventory::collect!(ProviderDescriptor);

/// Registers a provider. Use once per provider, at the top level of its crate:
///
/// ```ignore
/// meshgate::register_provider!(INFO, build);
/// fn build() -> Box<dyn meshgate::BindProvider> { Box::new(MyProvider) }
/// ```
///
/// The crate must also be *referenced* by the final binary (`use my_crate as _;`),
/// or the linker drops it and the provider silently vanishes.
#[macro_export]
macro_rules! register_provider {
    ($info:expr, $build:path) => {
        $crate::inventory::submit! {
            $crate::ProviderDescriptor {
                info: $info,
                crate_name: env!("CARGO_PKG_NAME"),
                build: $build,
            }
        }
    };
}

/// The registry could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two providers share a name.
    #[error("register providers: the name `{name}` is used by both `{first}` and `{second}`; rename one of them")]
    Duplicate {
        /// The contested name.
        name: String,
        /// The crate seen first.
        first: String,
        /// The other crate.
        second: String,
    },
    /// A descriptor's `info` differs from its provider's `info()`.
    #[error("register providers: `{crate_name}` registers `{registered}` but its provider calls itself `{actual}`")]
    Mismatch {
        /// The crate.
        crate_name: String,
        /// The registered name.
        registered: String,
        /// What `info().name` says.
        actual: String,
    },
}

/// One registered provider.
pub struct Entry {
    /// Its descriptor.
    pub descriptor: &'static ProviderDescriptor,
    /// The built provider.
    pub provider: Box<dyn BindProvider>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.descriptor.info.name)
            .field("crate", &self.descriptor.crate_name)
            .finish()
    }
}

impl Entry {
    /// The provider's facts.
    pub fn info(&self) -> ProviderInfo {
        self.descriptor.info
    }
}

/// Every provider, sorted by priority then name.
#[derive(Debug)]
pub struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    /// The providers linked into this program (built once, on first use).
    pub fn global() -> Result<&'static Registry, RegistryError> {
        static GLOBAL: OnceLock<Result<Registry, RegistryError>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Registry::from_descriptors(inventory::iter::<ProviderDescriptor>()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A registry of these descriptors (tests build their own).
    pub fn from_descriptors(
        descriptors: impl IntoIterator<Item = &'static ProviderDescriptor>,
    ) -> Result<Registry, RegistryError> {
        let mut by_name: BTreeMap<&'static str, &'static ProviderDescriptor> = BTreeMap::new();
        for d in descriptors {
            if let Some(first) = by_name.insert(d.info.name, d) {
                // Order the two crate names so the message does not depend on link order.
                let (a, b) = if first.crate_name <= d.crate_name {
                    (first.crate_name, d.crate_name)
                } else {
                    (d.crate_name, first.crate_name)
                };
                return Err(RegistryError::Duplicate { name: d.info.name.into(), first: a.into(), second: b.into() });
            }
        }
        let mut entries = Vec::with_capacity(by_name.len());
        for d in by_name.into_values() {
            let provider = (d.build)();
            if provider.info().name != d.info.name {
                return Err(RegistryError::Mismatch {
                    crate_name: d.crate_name.into(),
                    registered: d.info.name.into(),
                    actual: provider.info().name.into(),
                });
            }
            entries.push(Entry { descriptor: d, provider });
        }
        entries.sort_by_key(|e| (e.info().priority, e.info().name));
        Ok(Registry { entries })
    }

    /// All entries, by priority then name.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry with this name.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.info().name == name)
    }

    /// All names, by priority then name.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.info().name).collect()
    }
}
